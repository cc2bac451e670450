"""How the agent reaches the host it manages: directly, as a host process, or from its DaemonSet pod.

A pod has its own mount, UTS, IPC and network namespaces and its own cgroups. With ``hostPID`` it sees the
host's processes, and through one of them (PID 1 unless told otherwise) the host: ``/proc/<pid>/root`` is the
host's file system, and ``nsenter`` on it runs a command in the host's namespaces. Handler binaries, hulld and
its files are the host's, never the pod's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)
MAX_SYMLINKS = 40  # as the kernel's path walk


class HostError(RuntimeError):
    pass


@contextlib.contextmanager
def host_lock(path: Path) -> Iterator[None]:
    """The agent's lock on the host's runtime setup (hulld's installation, containerd's drop-in): two agents
    (an upgrade's old and new pod) never change it at once."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class Host:
    from_pod: bool = False
    pid: int = 1
    """A process in the host's namespaces: init, or (where init refuses inspection) e.g. the kubelet."""

    def root(self) -> Path:
        """The host's file system as the agent reaches it; fails clearly when the host process is gone."""
        if not self.from_pod:
            return Path("/")
        root = Path("/proc") / str(self.pid) / "root"
        try:
            os.stat(root)
        except OSError as error:  # gone (a PID that outlived its process), or not ours to inspect
            raise HostError(f"cannot reach the host through process {self.pid} (--host-pid): {error}") from error
        return root

    def path(self, path: str | Path) -> Path:
        """A host path as the agent reaches it, symlinks resolved as the host resolves them."""
        if not self.from_pod:
            return Path(path)
        root = self.root()
        resolved = PurePosixPath("/")
        pending = list(PurePosixPath(path).parts[1:])
        followed = 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                resolved = resolved.parent
                continue
            candidate = resolved / part
            reached = root / candidate.relative_to("/")
            if reached.is_symlink():
                followed += 1
                if followed > MAX_SYMLINKS:
                    raise HostError(f"{path}: too many levels of symbolic links")
                target = PurePosixPath(os.readlink(reached))
                if target.is_absolute():  # relative to the host's root, not the agent's
                    resolved = PurePosixPath("/")
                pending[:0] = [p for p in target.parts if p != "/"]
                continue
            resolved = candidate
        return root / resolved.relative_to("/")

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in the host's mount, UTS, IPC and network namespaces."""
        if not self.from_pod:
            return list(argv)
        self.root()
        return ["nsenter", f"--target={self.pid}", "--mount", "--uts", "--ipc", "--net", "--", *argv]

    def adopt_process(self, pid: int) -> None:
        """Move ``pid`` out of the agent's cgroups to the root of the host's cgroup hierarchies: the pod's end
        (its cgroups killed or removed) must not reach a process that outlives it, such as hulld."""
        if not self.from_pod:
            return
        hierarchies = self.path("/sys/fs/cgroup")
        if (hierarchies / "cgroup.controllers").exists():  # cgroup v2: one hierarchy, mounted right there
            roots = [hierarchies / "cgroup.procs"]
        else:  # v1 (and hybrid): each directory here is a hierarchy's root (and "unified", v2's)
            roots = sorted(hierarchies.glob("*/cgroup.procs"))
        for procs in roots:
            try:
                procs.write_text(str(pid))
            except OSError as error:
                logger.warning("could not move process %d to %s: %s", pid, procs.parent, error)
