"""cgroup v1 (a hierarchy per controller): a container's usage and details, and the limits of a pod cgroup that
hulld writes itself. ``relative`` paths are the same in every hierarchy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hulld.node import devices
from hulld.node.cgroups.files import key_values, pids_max, read_int, read_ints
from hulld.node.cgroups.readings import Details, Usage


def usage(root: Path, relative: str) -> Usage:
    cpu = read_int(root / "cpuacct" / relative / "cpuacct.usage")
    memory = root / "memory" / relative
    used = read_int(memory / "memory.usage_in_bytes")
    stats = key_values(memory / "memory.stat")
    working_set = None if used is None else max(0, used - stats.get("total_inactive_file", 0))
    return Usage(
        cpu_nanoseconds=cpu, memory_usage=used, memory_working_set=working_set, memory_rss=stats.get("total_rss")
    )


def details(root: Path, relative: str) -> Details:
    cpuacct = key_values(root / "cpuacct" / relative / "cpuacct.stat")  # in USER_HZ ticks
    tick = 10**9 // os.sysconf("SC_CLK_TCK")
    cpu = root / "cpu" / relative
    throttling = key_values(cpu / "cpu.stat")
    quota = read_int(cpu / "cpu.cfs_quota_us")
    memory = root / "memory" / relative
    stats = key_values(memory / "memory.stat")
    used, swapped = read_int(memory / "memory.usage_in_bytes"), read_int(memory / "memory.memsw.usage_in_bytes")
    pids = root / "pids" / relative
    processes = read_ints(pids / "cgroup.procs")
    return Details(
        cpu_user_nanoseconds=None if "user" not in cpuacct else cpuacct["user"] * tick,
        cpu_system_nanoseconds=None if "system" not in cpuacct else cpuacct["system"] * tick,
        cfs_periods=throttling.get("nr_periods"),
        cfs_throttled_periods=throttling.get("nr_throttled"),
        cfs_throttled_nanoseconds=throttling.get("throttled_time"),
        cpu_period_microseconds=read_int(cpu / "cpu.cfs_period_us"),
        cpu_quota_microseconds=quota if quota is not None and quota > 0 else None,
        cpu_shares=read_int(cpu / "cpu.shares"),
        memory_cache=stats.get("total_cache"),
        memory_mapped_file=stats.get("total_mapped_file"),
        memory_kernel=read_int(memory / "memory.kmem.usage_in_bytes"),
        memory_swap=None if used is None or swapped is None else max(0, swapped - used),
        memory_failcnt=read_int(memory / "memory.failcnt"),
        memory_max_usage=read_int(memory / "memory.max_usage_in_bytes"),
        memory_limit=read_int(memory / "memory.limit_in_bytes"),
        memory_reservation=read_int(memory / "memory.soft_limit_in_bytes"),
        memory_swap_limit=read_int(memory / "memory.memsw.limit_in_bytes"),
        page_faults={
            (kind, scope): stats[key]
            for kind in ("pgfault", "pgmajfault")
            for scope, key in (("container", kind), ("hierarchy", f"total_{kind}"))
            if key in stats
        },
        oom_kills=key_values(memory / "memory.oom_control").get("oom_kill"),
        pids=processes,
        processes=None if processes is None else len(processes),
        threads=None if (tasks := read_ints(pids / "tasks")) is None else len(tasks),
        threads_max=pids_max(pids / "pids.max"),
        io=_io(root / "blkio" / relative),
    )


def has_processes(root: Path, relative: str) -> bool:
    return bool(read_ints(root / "pids" / relative / "cgroup.procs"))


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


def apply_limits(root: Path, relative: str, resources: dict[str, Any]) -> None:
    """OCI ``linux.resources`` (cpu shares, quota and period; memory limit) written to the cgroup's files, the
    cgroup made if missing."""
    cpu, memory = resources.get("cpu", {}), resources.get("memory", {})
    writes = {
        ("cpu", "cpu.shares"): cpu.get("shares"),
        ("cpu", "cpu.cfs_period_us"): cpu.get("period"),
        ("cpu", "cpu.cfs_quota_us"): cpu.get("quota"),
        ("memory", "memory.limit_in_bytes"): memory.get("limit"),
    }
    for (controller, name), value in writes.items():
        if value is not None:
            directory = root / controller / relative
            directory.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(str(value))


def hierarchies(root: Path) -> list[Path]:
    return [path for path in root.iterdir() if path.is_dir() and not path.is_symlink()]
