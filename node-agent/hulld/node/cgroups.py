"""cgroup v1: container resource usage (cpuacct, memory) as the CRI's stats report it, the details cAdvisor
reports (the CRI metrics), and the limits and removal of a pod cgroup that hulld owns."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from hulld.node import devices

logger = logging.getLogger(__name__)

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


def _key_values(path: Path) -> dict[str, int]:
    """A cgroup file of "key value" lines (memory.stat, cpu.stat, cpuacct.stat, memory.oom_control)."""
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
    stats = _key_values(memory / "memory.stat")
    working_set = None
    if used is not None:
        working_set = max(0, used - stats.get("total_inactive_file", 0))
    return Usage(
        cpu_nanoseconds=cpu, memory_usage=used, memory_working_set=working_set, memory_rss=stats.get("total_rss")
    )


@dataclasses.dataclass(frozen=True)
class Details:
    """The rest of what cAdvisor reports of a container's cgroup (CRI metrics); None where the node's hierarchy
    lacks the reading (e.g. swap without swap accounting), or where a runtime whose containers the host cannot
    see into cannot tell it (``Details()``: nothing known). CPU times are nanoseconds, sizes bytes."""

    cpu_user_nanoseconds: int | None = None
    cpu_system_nanoseconds: int | None = None
    cfs_periods: int | None = None
    cfs_throttled_periods: int | None = None
    cfs_throttled_nanoseconds: int | None = None
    cpu_period_microseconds: int | None = None
    cpu_quota_microseconds: int | None = None
    """None when unlimited."""
    cpu_shares: int | None = None
    memory_cache: int | None = None
    memory_mapped_file: int | None = None
    memory_kernel: int | None = None
    memory_swap: int | None = None
    memory_failcnt: int | None = None
    memory_max_usage: int | None = None
    memory_limit: int | None = None
    memory_reservation: int | None = None
    memory_swap_limit: int | None = None
    page_faults: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    """(failure type ``pgfault``/``pgmajfault``, scope ``container``/``hierarchy``) → count."""
    oom_kills: int | None = None
    pids: list[int] | None = None
    """The host PIDs of the container's processes (the cgroup's own, not its children's); None when they are
    not the host's to see (a sandbox's)."""
    processes: int | None = None
    threads: int | None = None
    threads_max: int | None = None
    """0 when unlimited (cAdvisor's convention)."""
    io: dict[tuple[str, int, int, str], tuple[int, int]] = dataclasses.field(default_factory=dict)
    """(device name, major, minor, operation ``Read``/``Write``) → (bytes, operations), as the block layer
    counted them."""


def details(cgroups_path: str) -> Details:
    relative = cgroups_path.strip("/")
    cpuacct = _key_values(CGROUP_ROOT / "cpuacct" / relative / "cpuacct.stat")  # in USER_HZ ticks
    tick = 10**9 // os.sysconf("SC_CLK_TCK")
    cpu = CGROUP_ROOT / "cpu" / relative
    throttling = _key_values(cpu / "cpu.stat")
    quota = _read_int(cpu / "cpu.cfs_quota_us")
    memory = CGROUP_ROOT / "memory" / relative
    stats = _key_values(memory / "memory.stat")
    used, swapped = _read_int(memory / "memory.usage_in_bytes"), _read_int(memory / "memory.memsw.usage_in_bytes")
    pids = CGROUP_ROOT / "pids" / relative
    processes = _read_ints(pids / "cgroup.procs")
    return Details(
        cpu_user_nanoseconds=None if "user" not in cpuacct else cpuacct["user"] * tick,
        cpu_system_nanoseconds=None if "system" not in cpuacct else cpuacct["system"] * tick,
        cfs_periods=throttling.get("nr_periods"),
        cfs_throttled_periods=throttling.get("nr_throttled"),
        cfs_throttled_nanoseconds=throttling.get("throttled_time"),
        cpu_period_microseconds=_read_int(cpu / "cpu.cfs_period_us"),
        cpu_quota_microseconds=quota if quota is not None and quota > 0 else None,
        cpu_shares=_read_int(cpu / "cpu.shares"),
        memory_cache=stats.get("total_cache"),
        memory_mapped_file=stats.get("total_mapped_file"),
        memory_kernel=_read_int(memory / "memory.kmem.usage_in_bytes"),
        memory_swap=None if used is None or swapped is None else max(0, swapped - used),
        memory_failcnt=_read_int(memory / "memory.failcnt"),
        memory_max_usage=_read_int(memory / "memory.max_usage_in_bytes"),
        memory_limit=_read_int(memory / "memory.limit_in_bytes"),
        memory_reservation=_read_int(memory / "memory.soft_limit_in_bytes"),
        memory_swap_limit=_read_int(memory / "memory.memsw.limit_in_bytes"),
        page_faults={
            (kind, scope): stats[key]
            for kind in ("pgfault", "pgmajfault")
            for scope, key in (("container", kind), ("hierarchy", f"total_{kind}"))
            if key in stats
        },
        oom_kills=_key_values(memory / "memory.oom_control").get("oom_kill"),
        pids=processes,
        processes=None if processes is None else len(processes),
        threads=None if (tasks := _read_ints(pids / "tasks")) is None else len(tasks),
        threads_max=_pids_max(pids / "pids.max"),
        io=_io(CGROUP_ROOT / "blkio" / relative),
    )


def has_processes(cgroups_path: str) -> bool:
    """Whether the cgroup holds a process of the host (a sandboxed container's does not)."""
    return bool(_read_ints(CGROUP_ROOT / "pids" / cgroups_path.strip("/") / "cgroup.procs"))


def _read_ints(path: Path) -> list[int] | None:
    try:
        return [int(line) for line in path.read_text().split()]
    except (FileNotFoundError, ValueError, OSError):
        return None


def _pids_max(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return 0 if text == "max" else int(text) if text.isdigit() else None


def _io(blkio: Path) -> dict[tuple[str, int, int, str], tuple[int, int]]:
    """``blkio.throttle.*_recursive`` lines ``MAJOR:MINOR Operation count``; the throttle files count every
    request, whichever I/O scheduler the device uses."""
    counts: dict[tuple[int, int, str], list[int]] = {}
    for column, name in enumerate(("io_service_bytes_recursive", "io_serviced_recursive")):
        try:
            lines = (blkio / f"blkio.throttle.{name}").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) == 3 and fields[1] in ("Read", "Write") and fields[2].isdigit():
                major, _, minor = fields[0].partition(":")
                if major.isdigit() and minor.isdigit():
                    counts.setdefault((int(major), int(minor), fields[1]), [0, 0])[column] = int(fields[2])
    return {
        (devices.block_device_name(major, minor), major, minor, operation): (value[0], value[1])
        for (major, minor, operation), value in counts.items()
    }


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


def remove(cgroups_path: str) -> None:
    """Remove a cgroup hulld made (a pod's own, with what runtimes left below it) from every hierarchy, deepest
    first. A cgroup that still has processes stays (rmdir refuses it): it is logged, not forced."""
    relative = cgroups_path.strip("/")
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / relative
        if not top.is_dir() or top.is_symlink():
            continue
        below = sorted((path for path in top.rglob("*") if path.is_dir()), key=lambda path: len(path.parts))
        for directory in [*reversed(below), top]:
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError as error:
                logger.warning("cgroup %s not removed: %s", directory, error)
