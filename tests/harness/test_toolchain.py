"""Every toolchain binary is cached at its pinned version and runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kubehull_harness import toolchain

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("name", sorted(toolchain.components()))
def test_cached_binaries_report_their_pinned_version(name: str) -> None:
    component = toolchain.components()[name]
    toolchain.check(component, component.bin_dir)


def test_binary_lookup_names_the_cache_path_and_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert toolchain.binary("kube-apiserver").name == "kube-apiserver"
    monkeypatch.setenv("KUBEHULL_CACHE", str(tmp_path))
    with pytest.raises(toolchain.ToolchainError, match=r"toolchain\.py build"):
        toolchain.binary("etcd")
    with pytest.raises(toolchain.ToolchainError, match="not a toolchain binary"):
        toolchain.binary("dockerd")


def test_helm_assumes_the_kubernetes_of_its_client_go() -> None:
    """helm without a cluster (`helm template`, lint) checks charts against the Kubernetes version stamped into
    it; an unstamped build says 1.20 and refuses kubehull's chart (kubeVersion >= 1.30)."""
    chart = Path(__file__).resolve().parents[2] / "charts" / "kubehull"
    rendered = subprocess.run(
        [str(toolchain.binary("helm")), "template", "kh", str(chart), "--show-only", "templates/operator.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "kind: Deployment" in rendered.stdout
