"""What the host's /proc says of a container's processes (CRI metrics): their open files and sockets. Links
under /proc/PID/fd are read, never followed."""

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
