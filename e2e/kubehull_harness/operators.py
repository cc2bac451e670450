"""`kubehull-operator` as a process on this machine, against any test API server: the operator tests' own, or a
cluster whose node is too slow to run it as a pod (the emulated VM's, vm_cluster.py)."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import urllib.request
from pathlib import Path

from kubehull_harness import processes


class OperatorProcess:
    """One `kubehull-operator` process with metrics on a free loopback port; its log goes to ``log_dir``."""

    counter = itertools.count(1)

    def __init__(self, kubeconfig: Path, log_dir: Path, *extra: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.extra = extra
        self.metrics_port = processes.free_port()
        self.process: processes.ManagedProcess | None = None
        self.start()

    def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "kubehull_operator",
            f"--metrics-port={self.metrics_port}",
            "--metrics-address=127.0.0.1",
            "--health-endpoint=",
            *self.extra,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        self.process = processes.ManagedProcess(f"operator-{next(self.counter)}", argv, self.log_dir, env=env)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        """SIGKILL: no lease release, no cleanup, as a crash."""
        if self.process is not None:
            os.killpg(self.process.popen.pid, signal.SIGKILL)
            self.process.popen.wait()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text

    @property
    def log(self) -> str:
        assert self.process is not None
        return self.process.log_path.read_text(errors="replace")
