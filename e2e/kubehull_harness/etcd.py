"""A single-member etcd on loopback for a local kube-apiserver."""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from pathlib import Path

from kubehull_harness import processes, toolchain


@dataclasses.dataclass
class Etcd:
    client_url: str
    process: processes.ManagedProcess

    def stop(self) -> None:
        self.process.stop()


def _healthy(client_url: str) -> bool:
    with urllib.request.urlopen(f"{client_url}/health", timeout=2) as response:  # noqa: S310 - loopback http
        return bool(json.load(response).get("health") == "true")


def start(work_dir: Path, log_dir: Path, timeout: float = 60) -> Etcd:
    client_url = f"http://127.0.0.1:{processes.free_port()}"
    peer_url = f"http://127.0.0.1:{processes.free_port()}"
    argv: list[processes.Arg] = [
        toolchain.binary("etcd"),
        "--name=kubehull",
        f"--data-dir={work_dir / 'etcd'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=kubehull={peer_url}",
        # A test cluster's data is thrown away; fsync only slows every write down.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]
    process = processes.ManagedProcess("etcd", argv, log_dir)
    etcd = Etcd(client_url=client_url, process=process)
    try:
        process.wait_ready(lambda: _healthy(client_url), timeout, "healthy")
    except Exception:
        process.stop()
        raise
    return etcd
