"""The README's "set up and run" entry point brings the local cluster up, answers, and tears it down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.slow]

E2E_DIR = Path(__file__).resolve().parent


def test_up_check_starts_and_stops_everything(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubehull_harness", "up", "--check", "--work-dir", str(tmp_path / "cluster")],
        env={**os.environ, "PYTHONPATH": str(E2E_DIR)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kube-apiserver v1.36." in result.stdout
    kubeconfig = tmp_path / "cluster" / "admin.kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in result.stdout
    assert "/kubehull/busybox:1.35" in result.stdout
    assert "example RuntimeProfiles applied; their RuntimeClasses exist" in result.stdout
    # Torn down: nothing of this cluster is still running.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert leftovers.stdout == ""
