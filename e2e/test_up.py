"""The README's "set up and run" entry point: the local cluster with kubehull comes up, runs a pod under a
kubehull-managed RuntimeClass, and is torn down leaving nothing behind — also after an earlier run was killed
before its teardown could run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubehull_harness import cluster, host_cgroups

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

E2E_DIR = Path(__file__).resolve().parent
HARNESS_ENV = {**os.environ, "PYTHONPATH": str(E2E_DIR)}


def up(work_dir: Path, image_build_dir: Path, *flags: str) -> list[str]:
    return [
        *(sys.executable, "-m", "kubehull_harness", "up", *flags),
        *("--work-dir", str(work_dir), "--shared-image-build", str(image_build_dir)),
    ]


def stop_like_the_machine(harness: subprocess.Popen[bytes], work_dir: Path) -> None:
    """Every process of the run killed at once, as a machine stopping would: no teardown runs."""
    os.killpg(harness.pid, signal.SIGKILL)
    harness.wait()
    deadline = time.monotonic() + 30
    while victims := cluster.node_processes(work_dir).keys() | cluster.pod_processes():
        assert time.monotonic() < deadline, f"still running: {victims}"
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def test_up_check_cleans_up_after_a_killed_run_runs_a_pod_and_leaves_nothing_behind(
    tmp_path: Path, image_build_dir: Path
) -> None:
    killed_dir = tmp_path / "killed"
    output = tmp_path / "killed.out"
    with (
        output.open("wb") as sink,
        subprocess.Popen(
            up(killed_dir, image_build_dir), env=HARNESS_ENV, stdout=sink, stderr=sink, start_new_session=True
        ) as harness,
    ):
        deadline = time.monotonic() + 300
        while not cluster.pod_processes():  # kubehull's pods starting: sandboxes, network namespaces, containers
            assert harness.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        stop_like_the_machine(harness, killed_dir)
    assert cluster.RUN_MARK.read_text() == f"{killed_dir}\n"
    # What it left: its mark, its pods' cgroups and the mounts pinning their namespaces.
    assert host_cgroups.find("kubepods") != []
    assert f"{cluster.HULLD_STATE}/" in Path("/proc/self/mountinfo").read_text()

    work_dir = tmp_path / "cluster"
    result = subprocess.run(
        up(work_dir, image_build_dir, "--check"),
        env=HARNESS_ENV,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"cleaning up after an earlier cluster run in {killed_dir} that was not torn down" in result.stderr
    assert f"export KUBECONFIG={work_dir / 'admin.kubeconfig'}" in result.stdout
    assert "kubehull installed in" in result.stdout
    assert "pod hello ran under RuntimeClass runc: hello from hulld" in result.stdout
    # Torn down, both runs: no process, mount (network namespaces are pinned by mounts under /run/hulld), kubepods
    # cgroup, node file or bridge is left.
    assert cluster.node_processes(killed_dir) == {}
    assert cluster.node_processes(work_dir) == {}
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(tmp_path) not in mounts
    assert str(cluster.HULLD_STATE) not in mounts
    assert host_cgroups.find("kubepods") == []
    for path in (*cluster.NODE_PATHS, cluster.HULLD_STATE):
        assert not path.exists(), path
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert cluster.BRIDGE not in links
