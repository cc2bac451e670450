"""cgroup v1: container resource usage (cpuacct, memory) as the CRI's stats report it, and the limits of a
pod cgroup that hulld owns."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclasses.dataclass(frozen=True)
class Usage:
    cpu_nanoseconds: int | None
    memory_usage: int | None
    memory_working_set: int | None
    memory_rss: int | None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError, OSError):
        return None


def _memory_stat(path: Path) -> dict[str, int]:
    try:
        return {
            key: int(value)
            for key, value in (line.split() for line in path.read_text().splitlines() if len(line.split()) == 2)
        }
    except (FileNotFoundError, OSError, ValueError):
        return {}


def usage(cgroups_path: str) -> Usage:
    relative = cgroups_path.strip("/")
    cpu = _read_int(CGROUP_ROOT / "cpuacct" / relative / "cpuacct.usage")
    memory = CGROUP_ROOT / "memory" / relative
    used = _read_int(memory / "memory.usage_in_bytes")
    stats = _memory_stat(memory / "memory.stat")
    working_set = None
    if used is not None:
        working_set = max(0, used - stats.get("total_inactive_file", 0))
    return Usage(
        cpu_nanoseconds=cpu, memory_usage=used, memory_working_set=working_set, memory_rss=stats.get("total_rss")
    )


def own_oom_score_adj() -> int:
    return _read_int(Path("/proc/self/oom_score_adj")) or 0


def apply_limits(cgroups_path: str, resources: dict[str, Any]) -> None:
    """Write OCI ``linux.resources`` (cpu shares, quota and period; memory limit) to the cgroup, made if
    missing. For a pod's own cgroup, which no runtime manages: the containers' cgroups are below it."""
    relative = cgroups_path.strip("/")
    writes = {
        ("cpu", "cpu.shares"): resources.get("cpu", {}).get("shares"),
        ("cpu", "cpu.cfs_period_us"): resources.get("cpu", {}).get("period"),
        ("cpu", "cpu.cfs_quota_us"): resources.get("cpu", {}).get("quota"),
        ("memory", "memory.limit_in_bytes"): resources.get("memory", {}).get("limit"),
    }
    for (controller, name), value in writes.items():
        if value is not None:
            directory = CGROUP_ROOT / controller / relative
            directory.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(str(value))
