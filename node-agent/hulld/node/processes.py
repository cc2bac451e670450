"""What the host's /proc says of processes: a container's open files and sockets (CRI metrics), hulld's own OOM
score adjustment. Links under /proc/PID/fd are read, never followed."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


@dataclasses.dataclass(frozen=True)
class OpenFiles:
    descriptors: int
    sockets: int


def open_files(pids: Iterable[int]) -> OpenFiles:
    """The open file descriptors of ``pids``, and how many of them are sockets (a process gone meanwhile
    counts none)."""
    descriptors = sockets = 0
    for pid in pids:
        directory = PROC / str(pid) / "fd"
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                with contextlib.suppress(OSError):
                    target = os.readlink(entry.path)
                    descriptors += 1
                    sockets += target.startswith("socket:")
    return OpenFiles(descriptors, sockets)


def own_oom_score_adj() -> int:
    """hulld's own ``oom_score_adj``: without CAP_SYS_RESOURCE no process it starts may go below it."""
    try:
        return int((PROC / "self" / "oom_score_adj").read_text())
    except (OSError, ValueError):
        return 0
