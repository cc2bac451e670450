"""A run killed mid-test (CI cut at its limit, a Ctrl-C twice) leaves its mounts under the base directory; the
next run of the test command must still start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubehull_harness import mounts

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]


def test_a_run_starts_over_mounts_a_killed_run_left(tmp_path: Path) -> None:
    basetemp = tmp_path / "base"
    volume = basetemp / "popen-gw0" / "test_killed0" / "kubelet" / "pods" / "uid" / "volumes" / "token"
    volume.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(volume)], check=True)
    (volume / "token").write_text("left by a killed run")
    (tmp_path / "test_one.py").write_text("def test_one(tmp_path):\n    assert tmp_path.is_dir()\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    try:
        run = subprocess.run(
            [
                *(sys.executable, "-m", "pytest", "-p", "kubehull_harness.pytest_plugin", "-p", "no:cacheprovider"),
                *(f"--basetemp={basetemp}", f"--rootdir={tmp_path}", "-q", str(tmp_path / "test_one.py")),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO / "e2e")},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        mounts.unmount_under(basetemp)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    assert mounts.under(basetemp) == []
    assert not (basetemp / "popen-gw0").exists()
