"""How the agent reaches the host it manages: directly, as a host process, or from its DaemonSet pod.

A pod has its own mount, UTS, IPC and network namespaces and its own cgroups. With ``hostPID`` it sees the
host's processes, and through one of them (PID 1 unless told otherwise) the host: ``/proc/<pid>/root`` is the
host's file system, and ``nsenter`` on it runs a command in the host's namespaces. Handler binaries, hulld and
its files are the host's, never the pod's.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Host:
    from_pod: bool = False
    pid: int = 1
    """A process in the host's namespaces: init, or (where init refuses inspection) e.g. the kubelet."""

    @property
    def process(self) -> Path:
        return Path("/proc") / str(self.pid)

    def path(self, path: str | Path) -> Path:
        """A host path as the agent reaches it (absolute symlinks inside resolve in the agent's view)."""
        path = Path(path)
        return self.process / "root" / path.relative_to("/") if self.from_pod else path

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in the host's mount, UTS, IPC and network namespaces."""
        if not self.from_pod:
            return list(argv)
        return ["nsenter", f"--target={self.pid}", "--mount", "--uts", "--ipc", "--net", "--", *argv]

    def adopt_process(self, pid: int) -> None:
        """Move ``pid`` out of the agent's cgroups to the root of every host hierarchy: the pod's end (its
        cgroups killed or removed) must not reach a process that outlives it, such as hulld."""
        if not self.from_pod:
            return
        hierarchies = self.path("/sys/fs/cgroup")
        for procs in [hierarchies / "cgroup.procs", *hierarchies.glob("*/cgroup.procs")]:
            with contextlib.suppress(FileNotFoundError, PermissionError):
                procs.write_text(str(pid))
