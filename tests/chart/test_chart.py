"""The Helm chart: lint, render, server-side validation, and its admission policy for node agents."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kubehull_api import crd
from kubehull_harness import toolchain
from kubehull_harness.apiserver import KubeAPIServer

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubehull"


def helm(*args: str) -> str:
    result = subprocess.run(
        [str(toolchain.binary("helm")), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def kubectl(server: KubeAPIServer, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(toolchain.binary("kubectl")), f"--kubeconfig={server.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_chart_crds_are_the_generated_ones() -> None:
    assert crd.drift(CHART / "crds") == [], "run: python -m kubehull_api write charts/kubehull/crds"


def test_lint_strict() -> None:
    helm("lint", "--strict", str(CHART))


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("operator.replicas=-1", "/operator/replicas"),
        ("operator.startupSeconds=4", "/operator/startupSeconds"),
        ("agent.startupSeconds=0", "/agent/startupSeconds"),
    ],
)
def test_values_schema_rejects_bad_values(setting: str, field: str) -> None:
    result = subprocess.run(
        [str(toolchain.binary("helm")), "template", "x", str(CHART), "--kube-version", "1.36.5", "--set", setting],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert field in result.stderr


def test_startup_seconds_are_the_startup_probes_window() -> None:
    rendered = helm(
        "template",
        "kh",
        str(CHART),
        "--kube-version",
        "1.36.5",
        "--set",
        "operator.startupSeconds=1200",
        "--set",
        "agent.startupSeconds=62",
    )
    windows = {
        container["name"]: container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"]
        for document in yaml.safe_load_all(rendered)
        if document and document["kind"] in ("Deployment", "DaemonSet")
        for container in document["spec"]["template"]["spec"]["containers"]
    }
    assert windows == {"operator": 1200, "agent": 65}  # whole probes, rounded up


def test_chart_examples_are_the_documented_ones() -> None:
    for example in (CHART / "examples").glob("*.yaml"):
        assert example.read_text() == (REPO / "docs" / "examples" / example.name).read_text()


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "--set",
            "operator.replicas=3",
            "--set",
            "agent.probeImage=reg/busybox:1",
            "--set",
            "image.tag=dev",
            "--set",
            "image.pullPolicy=Always",
        ],
    ],
    ids=["defaults", "overrides"],
)
def test_rendered_manifests_pass_server_side_validation(kube_apiserver: KubeAPIServer, values: list[str]) -> None:
    applied = kubectl(kube_apiserver, "apply", "-f", str(CHART / "crds"))
    assert applied.returncode == 0, applied.stderr
    rendered = helm("template", "kh", str(CHART), "--namespace", "default", "--kube-version", "1.36.5", *values)
    checked = kubectl(kube_apiserver, "apply", "--dry-run=server", "-f", "-", stdin=rendered)
    assert checked.returncode == 0, checked.stderr
    kinds = {document["kind"] for document in yaml.safe_load_all(rendered) if document}
    assert {"Deployment", "DaemonSet", "ValidatingAdmissionPolicy", "ClusterRole", "Service"} <= kinds


@pytest.mark.parametrize(
    ("replicas", "said"),
    [
        ("2", "The operator runs as 2 pod(s), one leading"),
        (
            "0",
            "Run kubehull-operator elsewhere as the ServiceAccount\ndefault/kh-operator, with\n  --namespace=default"
            " --lease-namespace=default --lease-name=kh-operator\nand stop it before `helm uninstall`: while it leads,"
            " the uninstall hook fails and names it",
        ),
    ],
)
def test_notes_say_where_the_operator_runs(kube_apiserver: KubeAPIServer, replicas: str, said: str) -> None:
    """operator.replicas=0 is allowed (an operator run outside the cluster, as the VM's e2e test runs it), and the
    notes helm prints then say how to run it."""
    printed = helm(
        "install",
        "kh",
        str(CHART),
        "--dry-run=client",
        f"--kubeconfig={kube_apiserver.kubeconfig}",
        "--namespace=default",
        f"--set=operator.replicas={replicas}",
    )
    manifests, notes = printed.split("\nNOTES:\n")
    assert said in notes
    deployment = next(
        d for d in yaml.safe_load_all(manifests.split("MANIFEST:", 1)[1]) if d and d["kind"] == "Deployment"
    )
    assert deployment["spec"]["replicas"] == int(replicas)


def _agent_client(server: KubeAPIServer, namespace: str, account: str, node: dict[str, Any]) -> Any:
    core: Any = k8s.CoreV1Api(server.api_client())
    token = core.create_namespaced_service_account_token(
        account,
        namespace,
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [],
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "name": node["metadata"]["name"],
                    "uid": node["metadata"]["uid"],
                },
            },
        },
    ).status.token
    configuration = server.api_client().configuration
    configuration.cert_file = None
    configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return k8s.CustomObjectsApi(k8s.ApiClient(configuration))


def test_agent_may_write_only_its_own_nodes_status(kube_apiserver: KubeAPIServer) -> None:
    kubectl(kube_apiserver, "apply", "-f", str(CHART / "crds"))
    rendered = helm(
        "template",
        "vap",
        str(CHART),
        "--namespace",
        "default",
        "--kube-version",
        "1.36.5",
        "--show-only",
        "templates/agent.yaml",
    )
    policy_parts = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] != "DaemonSet"]
    applied = kubectl(kube_apiserver, "apply", "-f", "-", stdin=yaml.safe_dump_all(policy_parts))
    assert applied.returncode == 0, applied.stderr
    admin = kube_apiserver.api_client()
    core: Any = k8s.CoreV1Api(admin)
    custom: Any = k8s.CustomObjectsApi(admin)
    nodes = {}
    for name in ("vap-node-a", "vap-node-b"):
        nodes[name] = admin.sanitize_for_serialization(core.create_node({"metadata": {"name": name}}))
        custom.create_cluster_custom_object(
            "kubehull.io",
            "v1alpha1",
            "noderuntimes",
            {
                "apiVersion": "kubehull.io/v1alpha1",
                "kind": "NodeRuntime",
                "metadata": {"name": name},
                "spec": {"handlers": []},
            },
        )
    agent = _agent_client(kube_apiserver, "default", "vap-agent", nodes["vap-node-a"])
    patch = {"status": {"observedGeneration": 1, "runtime": {"name": "hulld", "version": "0.1.0", "ready": True}}}

    def write(node: str) -> ApiException | None:
        """The refusal, or None if the write went through."""
        try:
            agent.patch_cluster_custom_object_status(
                "kubehull.io", "v1alpha1", "noderuntimes", node, patch, _content_type="application/merge-patch+json"
            )
        except ApiException as error:
            return error
        return None

    def write_spec() -> ApiException | None:
        """The refusal of a write to the agent's own NodeRuntime's spec, or None if it went through."""
        try:
            agent.patch_cluster_custom_object(
                "kubehull.io",
                "v1alpha1",
                "noderuntimes",
                "vap-node-a",
                {"spec": {"handlers": []}},
                _content_type="application/merge-patch+json",
            )
        except ApiException as error:
            return error
        return None

    # RBAC and the policy take effect within moments of their creation: wait for the denial with the policy's
    # message, then the same token must be allowed on its own node.
    message = "only the status of the NodeRuntime of its own node (vap-node-a), not vap-node-b"
    deadline = time.monotonic() + 20
    refusal = write("vap-node-b")
    while refusal is None or message not in str(refusal.body):
        assert time.monotonic() < deadline, refusal.body if refusal else "the agent wrote another node's status"
        time.sleep(0.2)
        refusal = write("vap-node-b")
    assert refusal.status == 403
    while (denied := write("vap-node-a")) is not None:  # allowed once RBAC has caught up too
        assert time.monotonic() < deadline, denied.body
        time.sleep(0.2)
    spec_refusal = write_spec()
    assert spec_refusal is not None, "the agent wrote a NodeRuntime's spec"
    assert spec_refusal.status == 403
    # It reads Nodes (which runtime its kubelet uses) and writes none.
    agent_core: Any = k8s.CoreV1Api(agent.api_client)
    assert agent_core.read_node("vap-node-a", _preload_content=False).status == 200
    with pytest.raises(ApiException) as node_write:
        agent_core.patch_node("vap-node-a", {"metadata": {"labels": {"x": "y"}}})
    assert node_write.value.status == 403
    # RBAC refused the spec write above; were the agent's account granted more, the policy would still refuse it,
    # with its own message (a main-resource request has no subResource: the policy must not fail reading it).
    widened = kubectl(
        kube_apiserver,
        "create",
        "clusterrolebinding",
        "vap-agent-widened",
        "--clusterrole=cluster-admin",
        "--serviceaccount=default:vap-agent",
    )
    assert widened.returncode == 0, widened.stderr
    spec_message = "only the status of the NodeRuntime of its own node (vap-node-a), not vap-node-a"
    deadline = time.monotonic() + 20
    while True:
        refused = write_spec()
        assert refused is not None, "the agent wrote a NodeRuntime's spec"
        if spec_message in str(refused.body):
            break
        assert time.monotonic() < deadline, refused.body
        time.sleep(0.2)
    kubectl(kube_apiserver, "delete", "clusterrolebinding", "vap-agent-widened")
