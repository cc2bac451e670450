"""The test machine's cgroups, v1 (a hierarchy per controller) or v2 (one), for clean-ups and leftover checks."""

from __future__ import annotations

import contextlib
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def hierarchies(root: Path = ROOT) -> list[Path]:
    if (root / "cgroup.controllers").is_file():  # v2: one hierarchy, mounted right there
        return [root]
    return [path for path in root.iterdir() if path.is_dir() and not path.is_symlink()]


def find(relative: str, root: Path = ROOT) -> list[Path]:
    """Where the cgroup ``relative`` exists, in every hierarchy."""
    return [hierarchy / relative for hierarchy in hierarchies(root) if (hierarchy / relative).is_dir()]


def children(relative: str, root: Path = ROOT) -> set[Path]:
    """The cgroups right below ``relative``, in every hierarchy."""
    return {child for top in find(relative, root) for child in top.iterdir() if child.is_dir()}


def processes(relative: str, root: Path = ROOT) -> set[int]:
    """The processes in the cgroup ``relative`` and those below it, in any hierarchy."""
    found: set[int] = set()
    for top in find(relative, root):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):  # the cgroup went meanwhile
                found.update(int(pid) for pid in procs.read_text().split())
    return found


def remove_tree(relative: str, root: Path = ROOT) -> None:
    """Remove the cgroup ``relative`` and those below it, deepest first; a cgroup still in use stays."""
    for top in find(relative, root):
        for directory in [*sorted(top.rglob("*"), key=lambda path: len(path.parts), reverse=True), top]:
            if directory.is_dir():
                with contextlib.suppress(OSError):
                    directory.rmdir()
