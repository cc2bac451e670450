"""Pods' and containers' cgroups: where they are under the node's cgroup driver (``layout``), what a container
uses and holds (``readings``) as the node's hierarchy tells it, cgroup v1 (``v1``) or v2 (``v2``), detected once,
and the limits and removal of the pod cgroups hulld owns (through systemd under the systemd driver)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from hulld.node import systemd
from hulld.node.cgroups import v1, v2
from hulld.node.cgroups.layout import PodCgroup
from hulld.node.cgroups.readings import NO_USAGE, Details, Usage

__all__ = [
    "NO_USAGE",
    "Details",
    "PodCgroup",
    "Usage",
    "apply_limits",
    "details",
    "has_processes",
    "pod_oom_kills",
    "remove",
]

logger = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")


@functools.cache
def unified() -> bool:
    """Whether the node mounts cgroup v2's unified hierarchy at /sys/fs/cgroup, as every current node OS does,
    rather than v1's hierarchy per controller (a hybrid node's v2 mount, which holds no controller, counts
    as v1)."""
    return (ROOT / "cgroup.controllers").is_file()


def version() -> int:
    return 2 if unified() else 1


def usage(path: str) -> Usage:
    relative = path.strip("/")
    return v2.usage(ROOT, relative) if unified() else v1.usage(ROOT, relative)


def details(path: str) -> Details:
    relative = path.strip("/")
    return v2.details(ROOT, relative) if unified() else v1.details(ROOT, relative)


def has_processes(path: str) -> bool:
    """Whether the cgroup holds a process of the host (a sandboxed container's does not)."""
    relative = path.strip("/")
    return v2.has_processes(ROOT, relative) if unified() else v1.has_processes(ROOT, relative)


def pod_oom_kills(pod: PodCgroup) -> int | None:
    """OOM kills among the pod's processes so far, on cgroup v2 (None on v1: conmon's own watch is reliable
    there, the container's cgroup outliving its processes)."""
    return v2.oom_kills(ROOT, pod.path.strip("/")) if unified() else None


def apply_limits(pod: PodCgroup, resources: dict[str, Any]) -> None:
    """Give a pod cgroup that hulld owns OCI ``linux.resources`` (cpu shares, quota and period; memory limit):
    as its slice's properties under systemd, in its files (made if missing) under cgroupfs."""
    if pod.driver == "systemd":
        systemd.set_properties(pod.slice, _unit_properties(resources))
    else:
        (v2.apply_limits if unified() else v1.apply_limits)(ROOT, pod.path.strip("/"), resources)


def _unit_properties(resources: dict[str, Any]) -> dict[str, str]:
    cpu, memory = resources.get("cpu", {}), resources.get("memory", {})
    properties: dict[str, str] = {}
    if cpu.get("shares"):
        shares = int(cpu["shares"])
        properties.update({"CPUWeight": str(v2.shares_to_weight(shares))} if unified() else {"CPUShares": str(shares)})
    quota, period = int(cpu.get("quota") or 0), int(cpu.get("period") or 100_000)
    properties["CPUQuotaPeriodSec"] = f"{period}us"
    properties["CPUQuota"] = f"{quota * 100 / period:.2f}%" if quota > 0 else ""  # empty: no quota
    if memory.get("limit") is not None:
        limit = int(memory["limit"])
        properties["MemoryMax" if unified() else "MemoryLimit"] = str(limit) if limit > 0 else "infinity"
    return properties


def remove(pod: PodCgroup) -> None:
    """Remove a pod cgroup hulld owns, with what runtimes left below it: its slice stopped under systemd; under
    cgroupfs each directory removed, deepest first, in every hierarchy. A cgroup that still has processes stays
    (rmdir refuses it): it is logged, not forced."""
    if pod.driver == "systemd":
        systemd.stop(pod.slice)
        return
    relative = pod.path.strip("/")
    for hierarchy in [ROOT] if unified() else v1.hierarchies(ROOT):
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
