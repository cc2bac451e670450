"""Readers of cgroup files, whichever the hierarchy: a missing or unreadable file reads as None (or empty), as a
cgroup may go away while it is read and a node's kernel may lack a controller."""

from __future__ import annotations

from pathlib import Path

UNLIMITED = 2**63 - 1
"""What a limit reads as when the file says it has none (cgroup v2's ``max``): cgroup v1's own unlimited values
are as large."""


def read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def read_ints(path: Path) -> list[int] | None:
    """A file of whitespace-separated numbers (``cgroup.procs``, ``tasks``)."""
    try:
        return [int(word) for word in path.read_text().split()]
    except (OSError, ValueError):
        return None


def key_values(path: Path) -> dict[str, int]:
    """A file of "key value" lines (``memory.stat``, ``cpu.stat``, ``memory.events``)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.split() for line in lines)
    return {fields[0]: int(fields[1]) for fields in pairs if len(fields) == 2 and fields[1].isdigit()}


def pids_max(path: Path) -> int | None:
    """``pids.max``, with cAdvisor's convention for no limit: 0."""
    value = read_int(path)
    return 0 if value == UNLIMITED else value
