"""The interface every runtime handler implements."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import os
import socket
from pathlib import Path

from hulld.config import HandlerConfig, StorageConfig
from hulld.node import cgroups, namespaces
from hulld.node.cgroups.layout import Driver


@dataclasses.dataclass(frozen=True)
class ContainerPaths:
    bundle: Path
    """Holds config.json (root.path points at the container's rootfs)."""
    log: Path | None
    """The CRI log file, or None for no log."""
    exits: Path
    """Where the monitor writes ``<id>`` with the exit code."""
    persist: Path
    """The monitor's per-container directory (``oom`` appears here on an OOM kill)."""


TerminalSize = tuple[int, int]
"""A client's terminal: (width, height) in characters."""

EXEC_KILL_RETRY = 1.0
"""How long an exec'd command killed has to end before it is killed again: a sandbox runtime can fail the kill
(`runsc kill`, which gVisor's shim runs too and reports any failure of as "not found")."""
EXEC_KILL_PATIENCE = 10.0
"""How long an exec'd command that outlives its kills is killed again before hulld logs it and gives up (an
ExecSync past its deadline, an interactive exec whose client went away)."""


@dataclasses.dataclass(frozen=True)
class ContainerStdio:
    """How a container's own stdio is set up when it is created (the CRI's ``stdin``, ``stdin_once``, ``tty``)."""

    stdin: bool = False
    """Its input stays open for attached clients (else it reads end of file)."""
    stdin_once: bool = False
    """Its input ends when the first attached client's input ends (or that client goes away)."""
    tty: bool = False
    """It runs under a terminal of its own; its output is one stream."""


@dataclasses.dataclass(frozen=True)
class ExitStatus:
    code: int
    finished_at: int
    """Nanoseconds since the epoch."""
    oom_killed: bool


def recorded_exit(exits: Path, container_id: str) -> tuple[int, int] | None:
    """(exit code, exit time in ns) from ``<exits>/<id>``, where a container's monitor (conmon) or hulld's shim
    handler writes the code and sets the file's mtime to the exit time; None until it exists."""
    exit_file = exits / container_id
    try:
        text = exit_file.read_text().strip()
        finished = exit_file.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    return int(text) if text.lstrip("-").isdigit() else -1, finished


@dataclasses.dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


@dataclasses.dataclass(frozen=True)
class PortConnection:
    """A connection to a port in a pod (CRI PortForward)."""

    socket: socket.socket
    half_close: bool = True
    """Whether the pod's side goes on sending after ours ends (``shutdown(SHUT_WR)``). gVisor's port-forward
    drops the whole connection at the end of our input, which would cut the reply short: there, input stays
    open until the client closes its connection completely."""


class StdioSession(abc.ABC):
    """A client's connection to a command running in a container (CRI Exec) or to the container's own stdio
    (CRI Attach): descriptors hulld writes the client's input to and reads its output from, owned by this
    object until ``close``. With a terminal, the output (both streams) comes through ``stdout``, and ``stderr``
    is None. An attach ``wait``s until the container's output ends, and reports 0."""

    stdin: int | None
    stdout: int
    stderr: int | None

    @abc.abstractmethod
    def wait(self) -> int:
        """Block until the command exits; its exit code."""

    @abc.abstractmethod
    def resize(self, width: int, height: int) -> None:
        """The client's terminal changed size (only with a terminal)."""

    @abc.abstractmethod
    def end_input(self) -> None:
        """The client closed its input."""

    @abc.abstractmethod
    def kill(self) -> None:
        """The client went away before the command ended: an exec's command is killed, an attach detaches."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the descriptors and whatever else the exec holds (after ``wait``)."""

    def _close_descriptors(self) -> None:
        for descriptor in (self.stdin, self.stdout, self.stderr):
            if descriptor is not None:
                with contextlib.suppress(OSError):
                    os.close(descriptor)
        self.stdin = self.stderr = None


class Handler(abc.ABC):
    @abc.abstractmethod
    def __init__(self, name: str, config: HandlerConfig, storage: StorageConfig, cgroup_driver: Driver) -> None:
        """``storage``: hulld's directories (the runtime's default --root lives in its volatile state);
        ``cgroup_driver``: how the runtime makes its containers' cgroups (the spec's cgroupsPath is in its
        form)."""

    @property
    @abc.abstractmethod
    def sandbox_per_pod(self) -> bool:
        """Whether the runtime runs a pod's containers in one sandbox (gVisor) that an infra container holds."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of what the handler holds in hulld (connections, servers) when hulld exits or the handler is
        reconfigured; its containers go on."""

    @abc.abstractmethod
    def create(self, container_id: str, name: str, paths: ContainerPaths, sandbox: str, stdio: ContainerStdio) -> int:
        """Create the container (not started); returns its init process's PID. ``sandbox`` is the ID of the
        pod's infra container, which names the pod's sandbox (the infra's own ID when it is created)."""

    @abc.abstractmethod
    def start(self, container_id: str, paths: ContainerPaths) -> None: ...

    @abc.abstractmethod
    def signal(self, container_id: str, signal: int, paths: ContainerPaths) -> None:
        """Send ``signal`` to the container's init; no error if it has already exited. A container that was
        created and never started ends (its monitor records an exit) on SIGKILL."""

    @abc.abstractmethod
    def running(self, container_id: str) -> bool:
        """Whether the runtime reports the container running (created or stopped: False)."""

    @abc.abstractmethod
    def exit_status(self, container_id: str, paths: ContainerPaths) -> ExitStatus | None:
        """How the container ended, once the monitor has recorded it."""

    @abc.abstractmethod
    def delete(self, container_id: str, paths: ContainerPaths) -> None:
        """Forget the container in the runtime; idempotent."""

    @abc.abstractmethod
    def exec_sync(self, container_id: str, command: list[str], timeout: float) -> ExecResult: ...

    @abc.abstractmethod
    def exec(
        self, container_id: str, command: list[str], *, tty: bool, stdin: bool, size: TerminalSize | None
    ) -> StdioSession:
        """Run ``command`` in the container for a client attached to it (CRI Exec), under a terminal if ``tty``,
        of the client's ``size`` from the start (or as soon as the runtime allows)."""

    @abc.abstractmethod
    def attach(
        self, container_id: str, paths: ContainerPaths, *, stdin: bool, tty: bool, size: TerminalSize | None
    ) -> StdioSession:
        """Connect a client to the running container's own stdio (CRI Attach); ``stdin``: the client sends
        input; ``tty``: the container runs under a terminal (its output is one stream), set to the client's
        ``size``."""

    def connect(self, sandbox: str, network: Path | None, port: int) -> PortConnection:
        """A TCP connection to ``port`` on the pod's loopback (CRI PortForward). ``sandbox``: the pod's infra
        container, if it has one; ``network``: its network namespace (None: the host's). By default made in
        that namespace, which the pod's containers share with the host kernel's network stack."""
        return PortConnection(namespaces.connect_loopback(network, port))

    def usage(self, container_id: str, cgroups_path: str) -> cgroups.Usage:
        """What the running container uses now (CRI stats). By default its cgroup's reading: the container's
        processes are the host's."""
        return cgroups.usage(cgroups_path)

    def measure(self, container_id: str, cgroups_path: str) -> tuple[cgroups.Usage, cgroups.Details]:
        """Its usage and the rest of what cAdvisor reports of the running container (CRI metrics), from one
        reading of whatever accounts for it; by default its cgroup's."""
        return cgroups.usage(cgroups_path), cgroups.details(cgroups_path)

    @abc.abstractmethod
    def version(self) -> str: ...

    @abc.abstractmethod
    def reopen_log(self, container_id: str, paths: ContainerPaths) -> None: ...

    @abc.abstractmethod
    def update_resources(self, container_id: str, resources: dict[str, object]) -> None:
        """Apply OCI ``linux.resources`` to the running container."""
