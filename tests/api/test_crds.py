"""The CRDs in crds/ are exactly what the pydantic models generate, and the documented examples are valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubehull_api import crd
from kubehull_api.runtimeprofile import RuntimeProfile
from kubehull_harness import toolchain
from kubehull_harness.apiserver import KubeAPIServer

REPO = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models() -> None:
    assert crd.drift(REPO / "crds") == [], "crds/ is stale: run python -m kubehull_api write crds"


def test_drift_is_detected(tmp_path: Path) -> None:
    crd.write(tmp_path)
    assert crd.drift(tmp_path) == []
    stale = tmp_path / "runtimeprofiles.kubehull.io.yaml"
    stale.write_text(stale.read_text().replace("maxLength: 63", "maxLength: 64", 1))
    assert crd.drift(tmp_path) == ["runtimeprofiles.kubehull.io.yaml"]
    check = subprocess.run(
        [sys.executable, "-m", "kubehull_api", "check", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 1
    assert "runtimeprofiles.kubehull.io.yaml" in check.stderr


def test_schema_is_structural() -> None:
    """No $ref, no anyOf except int-or-string, a type on every node: what the API server demands."""

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node, path
            if "properties" in node or "items" in node or "additionalProperties" in node:
                assert "type" in node, path
            if "anyOf" in node:
                assert node.get("x-kubernetes-int-or-string") is True, path
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    for kind in crd.KINDS:
        walk(crd.manifest(kind), kind.crd_name)


@pytest.mark.parametrize("example", sorted((REPO / "docs/examples").glob("*.yaml")), ids=lambda path: path.name)
def test_examples_parse_with_the_models(example: Path) -> None:
    for document in yaml.safe_load_all(example.read_text()):
        RuntimeProfile.model_validate(document)


@pytest.mark.cluster
def test_examples_pass_server_side_validation(kube_apiserver: KubeAPIServer) -> None:
    kubectl = [str(toolchain.binary("kubectl")), f"--kubeconfig={kube_apiserver.kubeconfig}"]
    subprocess.run([*kubectl, "apply", "-f", REPO / "crds"], check=True, capture_output=True)
    subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", "crd/runtimeprofiles.kubehull.io"],
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [*kubectl, "apply", "--dry-run=server", "-f", REPO / "docs/examples"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("created (server dry run)") == len(list((REPO / "docs/examples").glob("*.yaml")))
