"""Long-running helper processes (etcd, kube-apiserver, the registry...) with their output kept in log files.

Every component the harness starts goes through ``ManagedProcess``: it writes the process's stdout and stderr to
``<log_dir>/<name>.log``, waits for a readiness check with a deadline (failing with the log's tail, not a bare
timeout), and stops the whole process group with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

Arg = str | os.PathLike[str]
"""A command-line argument: text or a path."""


class ProcessError(RuntimeError):
    pass


TEST_PORTS = range(20000, 32000)
"""Ports handed to the components tests start: below Linux's ephemeral range (32768-60999), from which every
outgoing connection takes one at any moment (a port the kernel offered as free could be taken so before the
component bound it: hulld's metrics port was, once)."""
_turn = itertools.count(secrets.randbelow(len(TEST_PORTS)))  # processes started together start apart


def _own_ports() -> range:
    """This process's share of ``TEST_PORTS``: each pytest-xdist worker (and what it starts, which inherits its
    environment) has its own, so two workers never offer the same port."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = len(TEST_PORTS) // max(workers, 1)
    return TEST_PORTS[worker * size : (worker + 1) * size]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, from this process's share (in turn, so
    ports just offered are not offered again soon)."""
    ports = _own_ports()
    for _ in range(len(ports)):
        port = ports[next(_turn) % len(ports)]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ProcessError(f"no free port in {ports}")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class ManagedProcess:
    def __init__(self, name: str, argv: Sequence[Arg], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = [os.fspath(arg) for arg in argv]
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            # A session of its own, so stop() reaches any children and a Ctrl-C in a terminal does not.
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def wait_ready(self, ready: Callable[[], object], timeout: float, what: str = "ready") -> None:
        """Poll ``ready`` until it returns something truthy without raising."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ProcessError(
                    f"{self.name} exited with {self.popen.returncode} before it was {what}:\n{log_tail(self.log_path)}"
                )
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.1)
        raise ProcessError(f"{self.name} was not {what} within {timeout:.0f}s:\n{log_tail(self.log_path)}")

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=grace)


def run(argv: Sequence[Arg], timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a short command; on failure raise with its output in the message."""
    command = [os.fspath(arg) for arg in argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise ProcessError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    completed: subprocess.CompletedProcess[str] = result
    return completed


def machine_processes() -> dict[int, list[str]]:
    """This machine's live processes in any PID namespace, PID → arguments, but not those in Docker's
    containers (cgroup ``/docker/<id>`` or ``docker-<id>.scope``): those are kind's nodes, machines of their
    own, whose hulld and runsc a test running beside the kind cluster's must not take for this machine's."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().removesuffix(b"\0").split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cgroups = (entry / "cgroup").read_text()
        except (OSError, IndexError):  # gone meanwhile
            continue
        if arguments != [b""] and state != "Z" and "docker" not in cgroups:
            found[int(entry.name)] = [argument.decode(errors="replace") for argument in arguments]
    return found
