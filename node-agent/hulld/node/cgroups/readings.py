"""What hulld reads of a container's cgroup, whichever the hierarchy: the CRI stats' usage and the rest that
cAdvisor reports (the CRI metrics)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Usage:
    cpu_nanoseconds: int | None
    memory_usage: int | None
    memory_working_set: int | None
    memory_rss: int | None


NO_USAGE = Usage(None, None, None, None)


@dataclasses.dataclass(frozen=True)
class Details:
    """The rest of what cAdvisor reports of a container's cgroup (CRI metrics); None where the node's hierarchy
    lacks the reading (e.g. swap without swap accounting), or where a runtime whose containers the host cannot
    see into cannot tell it (``Details()``: nothing known). CPU times are nanoseconds, sizes bytes; a limit
    that is not set reads as ``files.UNLIMITED``."""

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
