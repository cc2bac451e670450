"""Where pods' and containers' cgroups go under each driver, and cgroup v2's files as hulld reads them. The
readings themselves are tested on a real v2 hierarchy in the VM (test_cgroup_v2_systemd.py); here, the naming
and the parsing of each file's format, on files written as the kernel writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hulld.node.cgroups import v2
from hulld.node.cgroups.files import UNLIMITED
from hulld.node.cgroups.layout import PodCgroup, slice_path

SANDBOX, CONTAINER = "a" * 64, "b" * 64


def test_cgroupfs_paths() -> None:
    own = PodCgroup("cgroupfs", "", SANDBOX)
    assert own.owned
    assert own.path == f"/kubehull/{SANDBOX}"
    assert own.oci_path(CONTAINER) == own.container_path(CONTAINER) == f"/kubehull/{SANDBOX}/{CONTAINER}"
    kubelet = PodCgroup("cgroupfs", "/kubepods/burstable/pod1", SANDBOX)
    assert not kubelet.owned
    assert kubelet.container_path(CONTAINER) == f"/kubepods/burstable/pod1/{CONTAINER}"


def test_systemd_slices_and_scopes() -> None:
    own = PodCgroup("systemd", "", SANDBOX)
    assert own.slice == f"kubehull-{SANDBOX}.slice"
    assert own.path == f"/kubehull.slice/kubehull-{SANDBOX}.slice"
    assert own.oci_path(CONTAINER) == f"kubehull-{SANDBOX}.slice:hulld:{CONTAINER}"
    assert own.container_path(CONTAINER) == f"{own.path}/hulld-{CONTAINER}.scope"
    # The kubelet sends its slice's path; the slice is its last part.
    kubelet = PodCgroup("systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice", SANDBOX)
    assert kubelet.slice == "kubepods-burstable-pod1.slice"
    assert kubelet.path == "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"


@pytest.mark.parametrize(
    ("name", "path"),
    [("-.slice", "/"), ("system.slice", "/system.slice"), ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice")],
)
def test_slice_paths(name: str, path: str) -> None:
    assert slice_path(name) == path


def test_cgroup_v2_files(tmp_path: Path) -> None:
    cgroup = tmp_path / "pod" / "container"
    cgroup.mkdir(parents=True)
    files = {
        "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\n"
        "nr_throttled 3\nthrottled_usec 40000\n",
        "cpu.max": "50000 100000\n",
        "cpu.weight": "24\n",
        "memory.current": "209715200\n",
        "memory.stat": "anon 104857600\nfile 52428800\nkernel 1048576\nfile_mapped 4096\ninactive_file 20971520\n"
        "pgfault 1000\npgmajfault 7\n",
        "memory.events": "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
        "memory.max": "max\n",
        "memory.peak": "314572800\n",
        "memory.swap.current": "0\n",
        "memory.swap.max": "max\n",
        "memory.low": "0\n",
        "pids.max": "max\n",
        "cgroup.procs": "12\n13\n",
        "cgroup.threads": "12\n13\n14\n",
        "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    }
    for name, text in files.items():
        (cgroup / name).write_text(text)
    usage = v2.usage(tmp_path, "pod/container")
    assert (usage.cpu_nanoseconds, usage.memory_usage, usage.memory_rss) == (2_500_000_000, 200 << 20, 100 << 20)
    assert usage.memory_working_set == (200 << 20) - (20 << 20)  # less the inactive file cache
    details = v2.details(tmp_path, "pod/container")
    assert (details.cpu_user_nanoseconds, details.cpu_system_nanoseconds) == (2_000_000_000, 500_000_000)
    assert (details.cfs_periods, details.cfs_throttled_periods, details.cfs_throttled_nanoseconds) == (
        10,
        3,
        40_000_000,
    )
    assert (details.cpu_quota_microseconds, details.cpu_period_microseconds) == (50000, 100000)
    assert details.cpu_shares == 604  # weight 24 (612 shares) back to shares, as cAdvisor converts: lossy
    assert (details.memory_cache, details.memory_mapped_file, details.memory_kernel) == (50 << 20, 4096, 1 << 20)
    assert (details.memory_failcnt, details.oom_kills, details.memory_max_usage) == (5, 1, 300 << 20)
    assert details.memory_limit == details.memory_swap_limit == UNLIMITED
    assert details.page_faults == {
        ("pgfault", "container"): 1000,
        ("pgfault", "hierarchy"): 1000,
        ("pgmajfault", "container"): 7,
        ("pgmajfault", "hierarchy"): 7,
    }
    assert (details.pids, details.processes, details.threads, details.threads_max) == ([12, 13], 2, 3, 0)
    assert {(major, minor, operation): counts for (_, major, minor, operation), counts in details.io.items()} == {
        (8, 0, "Read"): (4096, 1),
        (8, 0, "Write"): (8192, 2),
    }


def test_shares_and_weights_convert_as_runc_does() -> None:
    assert v2.shares_to_weight(2) == 1
    assert v2.shares_to_weight(1024) == 39
    assert v2.shares_to_weight(262144) == 10000
    assert v2.weight_to_shares(v2.shares_to_weight(262144)) == 262144
