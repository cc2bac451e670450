"""A real OCI registry (Debian's docker-registry, the CNCF distribution server) on 127.0.0.1 (or kind's gateway)."""

from __future__ import annotations

import dataclasses
import shutil
import urllib.request
from pathlib import Path

import yaml

from kubehull_harness import processes

REGISTRY_BINARY = "docker-registry"


@dataclasses.dataclass
class Registry:
    host: str
    """``127.0.0.1:<port>`` (or the address it was started on): the prefix of every image reference served here
    (plain HTTP)."""
    process: processes.ManagedProcess

    def reference(self, repository: str, tag_or_digest: str) -> str:
        separator = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"{self.host}/{repository}{separator}{tag_or_digest}"

    def stop(self) -> None:
        self.process.stop()


def _serving(host: str) -> bool:
    with urllib.request.urlopen(f"http://{host}/v2/", timeout=2) as response:
        return bool(response.status == 200)


def start(work_dir: Path, log_dir: Path, timeout: float = 30, host: str = "") -> Registry:
    """``host``: the address and port to serve on (default: a free port on 127.0.0.1)."""
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise processes.ProcessError(f"{REGISTRY_BINARY} is not installed (Debian package docker-registry)")
    host = host or f"127.0.0.1:{processes.free_port()}"
    config = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(work_dir / "storage")}, "delete": {"enabled": True}},
        "http": {"addr": host},
    }
    work_dir.mkdir(parents=True, exist_ok=True)
    config_path = work_dir / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    process = processes.ManagedProcess("docker-registry", [binary, "serve", config_path], log_dir)
    try:
        process.wait_ready(lambda: _serving(host), timeout, "serving /v2/")
    except Exception:
        process.stop()
        raise
    return Registry(host=host, process=process)
