"""The README's "set up and run" entry point: the local cluster with kubehull comes up, runs a pod under a
kubehull-managed RuntimeClass, and is torn down leaving nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubehull_harness import cluster, host_cgroups, processes

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

E2E_DIR = Path(__file__).resolve().parent


def test_up_check_runs_a_pod_and_leaves_nothing_behind(tmp_path: Path) -> None:
    work_dir = tmp_path / "cluster"
    result = subprocess.run(
        [sys.executable, "-m", "kubehull_harness", "up", "--check", "--work-dir", str(work_dir)],
        env={**os.environ, "PYTHONPATH": str(E2E_DIR)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"export KUBECONFIG={work_dir / 'admin.kubeconfig'}" in result.stdout
    assert "kubehull installed in" in result.stdout
    assert "pod hello ran under RuntimeClass runc: hello from hulld" in result.stdout
    # Torn down: no process, mount (network namespaces are pinned by mounts under /run/hulld), kubepods
    # cgroup, node file or bridge of this cluster is left.
    # conmon's command line names the work dir, a shim's its socket under hulld's state
    marks = (str(work_dir), f"{cluster.HULLD_STATE}/", f"hulld --config {cluster.HULLD_CONFIG}")
    leftovers = [
        line for line in map(" ".join, processes.machine_processes().values()) if any(mark in line for mark in marks)
    ]
    assert leftovers == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(work_dir) not in mounts
    assert str(cluster.HULLD_STATE) not in mounts
    assert host_cgroups.find("kubepods") == []
    for path in (*cluster.NODE_PATHS, cluster.HULLD_STATE):
        assert not path.exists(), path
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert cluster.BRIDGE not in links
