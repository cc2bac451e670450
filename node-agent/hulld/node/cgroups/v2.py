"""cgroup v2 (one unified hierarchy): a container's usage and details, and the limits of a pod cgroup that
hulld writes itself. What cAdvisor reads on v2 (through runc's libcontainer), under the same names as on v1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hulld.node import devices
from hulld.node.cgroups.files import UNLIMITED, key_values, pids_max, read_int, read_ints
from hulld.node.cgroups.readings import Details, Usage

CONTROLLERS = ("cpu", "memory", "pids")
"""What a pod cgroup of hulld's own needs enabled in its parents (its limits, its containers' readings)."""


def usage(root: Path, relative: str) -> Usage:
    directory = root / relative
    cpu = key_values(directory / "cpu.stat")
    used = read_int(directory / "memory.current")
    stats = key_values(directory / "memory.stat")
    working_set = None if used is None else max(0, used - stats.get("inactive_file", 0))
    return Usage(
        cpu_nanoseconds=_nanoseconds(cpu, "usage_usec"),
        memory_usage=used,
        memory_working_set=working_set,
        memory_rss=stats.get("anon"),
    )


def details(root: Path, relative: str) -> Details:
    directory = root / relative
    cpu = key_values(directory / "cpu.stat")
    quota, period = _cpu_max(directory / "cpu.max")
    weight = read_int(directory / "cpu.weight")
    stats = key_values(directory / "memory.stat")
    events = key_values(directory / "memory.events")
    processes = read_ints(directory / "cgroup.procs")
    threads = read_ints(directory / "cgroup.threads")
    return Details(
        cpu_user_nanoseconds=_nanoseconds(cpu, "user_usec"),
        cpu_system_nanoseconds=_nanoseconds(cpu, "system_usec"),
        cfs_periods=cpu.get("nr_periods"),
        cfs_throttled_periods=cpu.get("nr_throttled"),
        cfs_throttled_nanoseconds=_nanoseconds(cpu, "throttled_usec"),
        cpu_period_microseconds=period,
        cpu_quota_microseconds=quota,
        cpu_shares=None if weight is None else weight_to_shares(weight),
        memory_cache=stats.get("file"),
        memory_mapped_file=stats.get("file_mapped"),
        memory_kernel=stats.get("kernel"),
        memory_swap=read_int(directory / "memory.swap.current"),
        memory_failcnt=events.get("max"),
        memory_max_usage=read_int(directory / "memory.peak"),
        memory_limit=read_int(directory / "memory.max"),
        memory_reservation=read_int(directory / "memory.low"),
        memory_swap_limit=read_int(directory / "memory.swap.max"),
        # v2 counts a cgroup with its descendants: a container's cgroup has none, so both scopes are one count.
        page_faults={
            (kind, scope): stats[kind]
            for kind in ("pgfault", "pgmajfault")
            for scope in ("container", "hierarchy")
            if kind in stats
        },
        oom_kills=events.get("oom_kill"),
        pids=processes,
        processes=None if processes is None else len(processes),
        threads=None if threads is None else len(threads),
        threads_max=pids_max(directory / "pids.max"),
        io=_io(directory / "io.stat"),
    )


def oom_kills(root: Path, relative: str) -> int | None:
    """Processes the OOM killer took in the cgroup and its descendants (``memory.events`` is hierarchical)."""
    return key_values(root / relative / "memory.events").get("oom_kill")


def has_processes(root: Path, relative: str) -> bool:
    return bool(read_ints(root / relative / "cgroup.procs"))


def _nanoseconds(values: dict[str, int], key: str) -> int | None:
    return None if key not in values else values[key] * 1000


def _cpu_max(path: Path) -> tuple[int | None, int | None]:
    """``cpu.max``: "QUOTA PERIOD" in microseconds, QUOTA ``max`` when unlimited (then None)."""
    try:
        quota, period = path.read_text().split()
    except (OSError, ValueError):
        return None, None
    return (int(quota) if quota.isdigit() else None), (int(period) if period.isdigit() else None)


def shares_to_weight(shares: int) -> int:
    """cgroup v1 CPU shares (2..262144, what the CRI and OCI carry) as cgroup v2's weight (1..10000), the
    conversion runc and the kubelet make."""
    return 1 + ((shares - 2) * 9999) // 262142


def weight_to_shares(weight: int) -> int:
    """The inverse, as cAdvisor reports a v2 container's shares."""
    return 2 + ((weight - 1) * 262142) // 9999


def _io(path: Path) -> dict[tuple[str, int, int, str], tuple[int, int]]:
    """``io.stat`` lines ``MAJOR:MINOR rbytes=N wbytes=N rios=N wios=N ...``."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    counts: dict[tuple[str, int, int, str], tuple[int, int]] = {}
    for line in lines:
        device, *fields = line.split()
        major, _, minor = device.partition(":")
        values = dict(field.partition("=")[::2] for field in fields)
        if not (major.isdigit() and minor.isdigit()):
            continue
        name = devices.block_device_name(int(major), int(minor))
        for operation, prefix in (("Read", "r"), ("Write", "w")):
            done, requests = values.get(f"{prefix}bytes", ""), values.get(f"{prefix}ios", "")
            if done.isdigit() and requests.isdigit():
                counts[(name, int(major), int(minor), operation)] = (int(done), int(requests))
    return counts


def apply_limits(root: Path, relative: str, resources: dict[str, Any]) -> None:
    """OCI ``linux.resources`` written to the cgroup's v2 files (``cpu.weight`` from shares, ``cpu.max``,
    ``memory.max``), the cgroup made if missing with its controllers enabled on the way down."""
    directory = root / relative
    _make_with_controllers(root, relative)
    cpu, memory = resources.get("cpu", {}), resources.get("memory", {})
    if cpu.get("shares"):
        (directory / "cpu.weight").write_text(str(shares_to_weight(int(cpu["shares"]))))
    if cpu.get("quota") is not None or cpu.get("period") is not None:
        quota = cpu.get("quota")
        period = cpu.get("period") or 100_000
        (directory / "cpu.max").write_text(f"{quota if quota is not None and quota > 0 else 'max'} {period}")
    if memory.get("limit") is not None:
        limit = int(memory["limit"])
        (directory / "memory.max").write_text("max" if limit <= 0 or limit >= UNLIMITED else str(limit))


def _make_with_controllers(root: Path, relative: str) -> None:
    """Make the cgroup and its missing parents, each parent delegating CONTROLLERS to its children (a v2
    controller's files exist in a cgroup only if its parent delegates it)."""
    parent = root
    for name in Path(relative).parts:
        available = set((parent / "cgroup.controllers").read_text().split())
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        wanted = [controller for controller in CONTROLLERS if controller in available - enabled]
        if wanted:
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{controller}" for controller in wanted))
        parent = parent / name
        parent.mkdir(exist_ok=True)
