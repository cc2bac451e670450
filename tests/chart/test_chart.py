"""The Helm chart: lint, render, server-side validation, and its admission policy for node agents."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kubehull_api import crd
from kubehull_api.engines import Engine, RuntimeType
from kubehull_api.nodehandler import (
    FINALIZER,
    PLURAL,
    HandlerConfig,
    NodeHandler,
    NodeHandlerSpec,
    object_name,
)
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


def test_values_schema_rejects_bad_values() -> None:
    result = subprocess.run(
        [
            str(toolchain.binary("helm")),
            "template",
            "x",
            str(CHART),
            "--kube-version",
            "1.36.5",
            "--set",
            "operator.replicas=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "/operator/replicas" in result.stderr


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


def test_chart_needs_kubernetes_1_32() -> None:
    """The NodeHandler CRD's selectable fields (an agent's field selector on spec.nodeName) came with 1.32."""
    helm("template", "x", str(CHART), "--kube-version", "1.32.0")
    result = subprocess.run(
        [str(toolchain.binary("helm")), "template", "x", str(CHART), "--kube-version", "1.31.9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr, result.stderr


def test_rbac_grants_exactly_what_the_components_write() -> None:
    rendered = helm("template", "kh", str(CHART), "--namespace", "default", "--kube-version", "1.36.5")
    roles = {
        document["metadata"]["name"]: document["rules"]
        for document in yaml.safe_load_all(rendered)
        if document and document["kind"] == "ClusterRole"
    }

    def verbs(role: str, resource: str) -> set[str]:
        return {verb for rule in roles[role] if resource in rule["resources"] for verb in rule["verbs"]}

    assert verbs("kh-agent", "nodehandlers") == {"get", "list", "watch", "patch", "update"}
    assert verbs("kh-agent", "nodehandlers/status") == {"patch", "update"}
    assert verbs("kh-agent", "nodes") == {"get"}
    assert verbs("kh-operator", "nodehandlers") == {"get", "list", "watch", "create", "patch", "update", "delete"}
    assert verbs("kh-uninstall", "nodehandlers") == {"get", "list", "patch", "delete"}
    assert verbs("kh-uninstall", "nodes") == {"list", "patch"}
    assert "noderuntimes" not in rendered


def _agent_client(server: KubeAPIServer, namespace: str, account: str, node: dict[str, Any] | None) -> Any:
    """A client with the agent's token: bound to ``node``, as the kubelet gives it, or to nothing."""
    core: Any = k8s.CoreV1Api(server.api_client())
    spec: dict[str, Any] = {"audiences": []}
    if node is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Node",
            "name": node["metadata"]["name"],
            "uid": node["metadata"]["uid"],
        }
    token = core.create_namespaced_service_account_token(
        account, namespace, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    ).status.token
    configuration = server.api_client().configuration
    configuration.cert_file = None
    configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return k8s.CustomObjectsApi(k8s.ApiClient(configuration))


# --- the agent's admission policy: its own node's NodeHandlers, their status and its finalizer only ---------------

OWN = "vap-node-a"
OTHER = "vap-node-b"
GROUP, VERSION = "kubehull.io", "v1alpha1"
MERGE = "application/merge-patch+json"
KEEP = "example.com/keep"  # someone else's finalizer: the agent must leave it alone
STATUS = {"status": {"observedGeneration": 1, "ready": True, "runtime": {"name": "hulld", "version": "0.1.0"}}}


def refusal(what: str, name: str, node: str, agent_node: str = OWN) -> str:
    """The policy's message for an agent on ``agent_node`` refused ``what`` (create, delete, change, write the
    status of) on NodeHandler ``name`` of ``node``."""
    return (
        f"the node agent may only write the status of the NodeHandlers of its own node ({agent_node}) and remove "
        f"their finalizer {FINALIZER} (changing nothing else), not {what} {name} (node {node})"
    )


def attempt(call: Callable[[], Any]) -> ApiException | None:
    """The refusal, or None if the request went through."""
    try:
        call()
    except ApiException as error:
        return error
    return None


def refused(call: Callable[[], Any], message: str) -> None:
    error = attempt(call)
    assert error is not None, f"allowed; expected: {message}"
    assert error.status == 403, error.body
    assert message in str(error.body), error.body


def node_handler(node: str, handler: str, finalizers: list[str]) -> dict[str, Any]:
    """A valid NodeHandler of ``node`` (as the operator creates them, with the given finalizers)."""
    config = HandlerConfig(
        name=handler,
        profile=handler,
        profile_generation=1,
        engine=Engine.RUNC,
        runtime_type=RuntimeType.OCI,
        path="/usr/sbin/runc",
    )
    model = NodeHandler(
        metadata={"name": object_name(node, handler), "finalizers": finalizers},
        spec=NodeHandlerSpec(node_name=node, handler=config),
    )
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclasses.dataclass
class Policy:
    """The chart's agent RBAC and policy on a real API server, two nodes, and an agent with node A's token."""

    admin: Any  # CustomObjectsApi, cluster-admin
    agent: Any  # CustomObjectsApi with the agent's token bound to OWN
    server: KubeAPIServer
    nodes: dict[str, dict[str, Any]]

    def create(self, node: str, handler: str, finalizers: tuple[str, ...] = (FINALIZER,)) -> dict[str, Any]:
        created: dict[str, Any] = self.admin.create_cluster_custom_object(
            GROUP, VERSION, PLURAL, node_handler(node, handler, list(finalizers))
        )
        return created

    def get(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.admin.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        return found

    def patch(self, name: str, patch: dict[str, Any], *, status: bool = False) -> Callable[[], Any]:
        """The agent's merge patch of ``name`` (its status, or the main resource), to call."""
        if status:
            return lambda: self.agent.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, name, patch, _content_type=MERGE
            )
        return lambda: self.agent.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, patch, _content_type=MERGE)

    def release(self, item: dict[str, Any], **changes: Any) -> Callable[[], Any]:
        """The agent's finalizer removal as it sends it (merge patch, with the resourceVersion), with
        ``changes`` merged into the patch's metadata (or ``spec=``: into its spec)."""
        spec = changes.pop("spec", None)
        finalizers = [f for f in item["metadata"].get("finalizers", []) if f != FINALIZER]
        metadata = {"finalizers": finalizers, "resourceVersion": item["metadata"]["resourceVersion"], **changes}
        patch: dict[str, Any] = {"metadata": metadata}
        if spec is not None:
            patch["spec"] = spec
        return self.patch(item["metadata"]["name"], patch)


@pytest.fixture(scope="module")
def policy(kube_apiserver: KubeAPIServer) -> Iterator[Policy]:
    applied = kubectl(kube_apiserver, "apply", "-f", str(CHART / "crds"))
    assert applied.returncode == 0, applied.stderr
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
    parts = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] not in ("DaemonSet", "Service")]
    # More RBAC than the chart gives, so that the policy alone must refuse creations and deletions.
    wider = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: vap-agent-wider}}
rules: [{{apiGroups: [{GROUP}], resources: [{PLURAL}], verbs: [create, delete]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: vap-agent-wider}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: vap-agent-wider}}
subjects: [{{kind: ServiceAccount, name: vap-agent, namespace: default}}]
"""
    manifests = yaml.safe_dump_all(parts) + "---\n" + wider
    applied = kubectl(kube_apiserver, "apply", "-f", "-", stdin=manifests)
    assert applied.returncode == 0, applied.stderr
    client = kube_apiserver.api_client()
    core: Any = k8s.CoreV1Api(client)
    nodes = {
        name: client.sanitize_for_serialization(core.create_node({"metadata": {"name": name}})) for name in (OWN, OTHER)
    }
    setup = Policy(
        admin=k8s.CustomObjectsApi(client),
        agent=_agent_client(kube_apiserver, "default", "vap-agent", nodes[OWN]),
        server=kube_apiserver,
        nodes=nodes,
    )
    try:
        for node in (OWN, OTHER):
            setup.create(node, "runc", ())
        # RBAC and the policy take effect within moments of their creation: wait for the policy's refusal of
        # another node's status, then for its allowing the own node's (RBAC caught up), then for creations to
        # be refused by the policy, not RBAC (the wider role caught up).
        deadline = time.monotonic() + 20
        message = refusal("write the status of", f"{OTHER}.runc", OTHER)
        while (error := attempt(setup.patch(f"{OTHER}.runc", STATUS, status=True))) is None or message not in str(
            error.body
        ):
            assert time.monotonic() < deadline, error.body if error else "the agent wrote another node's status"
            time.sleep(0.2)
        while (error := attempt(setup.patch(f"{OWN}.runc", STATUS, status=True))) is not None:
            assert time.monotonic() < deadline, error.body
            time.sleep(0.2)
        create = node_handler(OWN, "created", [FINALIZER])
        message = refusal("create", f"{OWN}.created", OWN)
        while True:
            error = attempt(lambda: setup.agent.create_cluster_custom_object(GROUP, VERSION, PLURAL, create))
            assert error is not None, "the agent created a NodeHandler"
            if message in str(error.body):
                break
            assert time.monotonic() < deadline, error.body
            time.sleep(0.2)
        yield setup
    finally:
        for item in setup.admin.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
            if item["spec"]["nodeName"] in (OWN, OTHER):
                name = item["metadata"]["name"]
                if item["metadata"].get("finalizers"):
                    setup.admin.patch_cluster_custom_object(
                        GROUP, VERSION, PLURAL, name, {"metadata": {"finalizers": None}}, _content_type=MERGE
                    )
                if "deletionTimestamp" not in item["metadata"]:
                    setup.admin.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        for node in (OWN, OTHER):
            core.delete_node(node)
        kubectl(kube_apiserver, "delete", "--ignore-not-found", "-f", "-", stdin=manifests)


def test_agent_writes_the_status_of_its_own_nodes_handlers_only(policy: Policy) -> None:
    assert policy.patch(f"{OWN}.runc", STATUS, status=True)() is not None
    assert policy.get(f"{OWN}.runc")["status"]["ready"] is True
    refused(
        policy.patch(f"{OTHER}.runc", STATUS, status=True),
        refusal("write the status of", f"{OTHER}.runc", OTHER),
    )
    assert "status" not in policy.get(f"{OTHER}.runc")


def test_agent_without_a_node_bound_token_writes_nothing(policy: Policy) -> None:
    unbound = _agent_client(policy.server, "default", "vap-agent", None)
    refused(
        lambda: unbound.patch_cluster_custom_object_status(
            GROUP, VERSION, PLURAL, f"{OWN}.runc", STATUS, _content_type=MERGE
        ),
        refusal("write the status of", f"{OWN}.runc", OWN, agent_node="no node-bound token"),
    )


def test_agent_releases_its_finalizer_from_its_own_nodes_handler(policy: Policy) -> None:
    """The agent's part of a deletion: the NodeHandler goes once the agent has taken its finalizer off."""
    item = policy.create(OWN, "leaving")
    policy.admin.delete_cluster_custom_object(GROUP, VERSION, PLURAL, item["metadata"]["name"])
    deleting = policy.get(item["metadata"]["name"])
    assert deleting["metadata"]["deletionTimestamp"]
    assert policy.release(deleting)() is not None
    gone = attempt(lambda: policy.get(item["metadata"]["name"]))
    assert gone is not None, "still there"
    assert gone.status == 404


def test_agent_releases_only_its_own_finalizer(policy: Policy) -> None:
    """Its finalizer off, another one kept: allowed, also before a deletion; the other one off: refused."""
    item = policy.create(OWN, "shared", (KEEP, FINALIZER))
    name = item["metadata"]["name"]
    refused(
        policy.patch(
            name, {"metadata": {"finalizers": [FINALIZER], "resourceVersion": item["metadata"]["resourceVersion"]}}
        ),
        refusal("change", name, OWN),
    )
    assert policy.release(item)() is not None
    assert policy.get(name)["metadata"]["finalizers"] == [KEEP]
    # Without its finalizer there is nothing left for the agent to release: any change is refused.
    refused(policy.patch(name, {"metadata": {"finalizers": []}}), refusal("change", name, OWN))


def test_agent_may_not_release_the_finalizer_on_another_node(policy: Policy) -> None:
    item = policy.create(OTHER, "leaving")
    name = item["metadata"]["name"]
    policy.admin.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    refused(policy.release(policy.get(name)), refusal("change", name, OTHER))
    assert policy.get(name)["metadata"]["finalizers"] == [FINALIZER]


@pytest.mark.parametrize(
    ("handler", "changes"),
    [
        ("spec", {"spec": {"handler": {"path": "/usr/local/bin/runc"}}}),
        ("labels", {"labels": {"example.com/x": "y"}}),
        ("annotations", {"annotations": {"example.com/x": "y"}}),
        (
            "owners",
            {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": OWN, "uid": "not-the-node"}]},
        ),
    ],
)
def test_agent_may_not_change_anything_else_while_releasing(
    policy: Policy, handler: str, changes: dict[str, Any]
) -> None:
    item = policy.create(OWN, f"also-{handler}")
    name = item["metadata"]["name"]
    refused(policy.release(item, **changes), refusal("change", name, OWN))
    assert policy.get(name)["metadata"]["finalizers"] == [FINALIZER]
    # The change alone (the finalizer kept) neither.
    spec = changes.get("spec")
    alone = {"spec": spec} if spec else {"metadata": changes}
    refused(policy.patch(name, alone), refusal("change", name, OWN))


def test_agent_may_not_create_or_delete_node_handlers(policy: Policy) -> None:
    """Refused by the policy itself, though the test gave the agent RBAC for it."""
    for node in (OWN, OTHER):
        created = node_handler(node, "new", [])
        name = f"{node}.runc"
        refused(
            functools.partial(policy.agent.create_cluster_custom_object, GROUP, VERSION, PLURAL, created),
            refusal("create", f"{node}.new", node),
        )
        refused(
            functools.partial(policy.agent.delete_cluster_custom_object, GROUP, VERSION, PLURAL, name),
            refusal("delete", name, node),
        )
        assert "deletionTimestamp" not in policy.get(name)["metadata"]


def test_agent_reads_its_node_and_writes_no_node(policy: Policy) -> None:
    """It reads Nodes (which runtime its kubelet uses) and writes none."""
    agent_core: Any = k8s.CoreV1Api(policy.agent.api_client)
    assert agent_core.read_node(OWN, _preload_content=False).status == 200
    with pytest.raises(ApiException) as node_write:
        agent_core.patch_node(OWN, {"metadata": {"labels": {"x": "y"}}})
    assert node_write.value.status == 403
