"""Operator tests: the real kube-apiserver fixture, kubehull's CRDs, and `kubehull-operator` as a process.

The node agent's side is played by the tests: ``Cluster.report`` writes a NodeRuntime status as an agent would.
Each test gets a fresh operator process and a ``Cluster`` whose objects carry the test's own prefix and are
deleted at the end (profiles first, while the operator still runs to release their finalizers).
"""

from __future__ import annotations

import datetime
import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kubehull_api.noderuntime import HandlerConfig
from kubehull_harness import processes, toolchain
from kubehull_harness.apiserver import KubeAPIServer
from kubehull_harness.operators import OperatorProcess
from kubehull_harness.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "kubehull.io", "v1alpha1"
FAST_LEASE = ("--lease-namespace=default", "--lease-duration=4", "--renew-period=1")
"""The operator's Lease in the tests' namespace, and short: a standby takes over within seconds."""
T = TypeVar("T")


@pytest.fixture(scope="session")
def kubehull_crds(kube_apiserver: KubeAPIServer) -> KubeAPIServer:
    kubectl = str(toolchain.binary("kubectl"))
    processes.run([kubectl, f"--kubeconfig={kube_apiserver.kubeconfig}", "apply", "-f", REPO / "crds"])
    kube_apiserver.wait_established("runtimeprofiles.kubehull.io", "noderuntimes.kubehull.io")
    return kube_apiserver


def status_condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    """The condition of type ``kind`` in a profile's status ({} if it has none)."""
    return next((dict(condition) for condition in status.get("conditions", []) if condition["type"] == kind), {})


@pytest.fixture
def operator(kubehull_crds: KubeAPIServer, component_logs: Path) -> Iterator[OperatorProcess]:
    running = OperatorProcess(kubehull_crds.kubeconfig, component_logs, *FAST_LEASE)
    yield running
    running.stop()


class Cluster:
    """Test-side access to the API: nodes, profiles, and the node agent's status reports."""

    def __init__(self, server: KubeAPIServer) -> None:
        self.server = server
        api = server.api_client()
        # Typed as Any: the tests pass and read plain dicts, which the client handles as they are.
        self.core: Any = k8s.CoreV1Api(api)
        self.node_api: Any = k8s.NodeV1Api(api)
        self.custom: Any = k8s.CustomObjectsApi(api)
        self.prefix = f"t{uuid.uuid4().hex[:6]}"
        self.nodes: list[str] = []
        self.profiles: list[str] = []

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    # --- nodes -----------------------------------------------------------------------------------------------

    def create_node(self, suffix: str, **labels: str) -> str:
        name = self.name(suffix)
        self.core.create_node(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"kubehull-test": self.prefix, **labels}},
            }
        )
        self.nodes.append(name)
        return name

    def label_node(self, name: str, **labels: str | None) -> None:
        self.core.patch_node(name, {"metadata": {"labels": labels}}, _content_type="application/merge-patch+json")

    def node_labels(self, name: str) -> dict[str, str]:
        return dict(self.core.read_node(name).metadata.labels or {})

    def handler_labels(self, name: str) -> dict[str, str]:
        return {k: v for k, v in self.node_labels(name).items() if k.startswith("handler.kubehull.io/")}

    # --- profiles --------------------------------------------------------------------------------------------

    def create_profile(self, suffix: str, spec: dict[str, Any], *, selector: bool = True) -> str:
        """A RuntimeProfile; unless told otherwise it selects only this test's nodes."""
        name = self.name(suffix)
        if selector and "nodeSelector" not in spec:
            spec = {**spec, "nodeSelector": {"matchLabels": {"kubehull-test": self.prefix}}}
        self.custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "runtimeprofiles",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RuntimeProfile", "metadata": {"name": name}, "spec": spec},
        )
        self.profiles.append(name)
        return name

    def patch_profile(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object(
            GROUP, VERSION, "runtimeprofiles", name, patch, _content_type="application/merge-patch+json"
        )

    def delete_profile(self, name: str, missing_ok: bool = False) -> None:
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, "runtimeprofiles", name)
        except ApiException as error:
            if not (missing_ok and error.status == 404):
                raise

    def wait_past_creation(self, profile: str) -> None:
        """Until the clock is a second past the profile's creationTimestamp (which has a second's resolution), so
        that a profile created next is strictly newer, not tied with it (a tie goes by name)."""
        created = datetime.datetime.fromisoformat(self.profile(profile)["metadata"]["creationTimestamp"])
        later = created + datetime.timedelta(seconds=1)
        wait_until(lambda: datetime.datetime.now(datetime.UTC) >= later, 5, f"a second past {profile}'s creation")

    def profile(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_cluster_custom_object(GROUP, VERSION, "runtimeprofiles", name)
        return result

    def condition(self, profile: str, kind: str) -> dict[str, Any]:
        return status_condition(self.profile(profile).get("status") or {}, kind)

    def exists(self, read: Callable[[], object]) -> bool:
        try:
            read()
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def profile_gone(self, name: str) -> bool:
        return not self.exists(lambda: self.profile(name))

    def events(self, profile: str) -> list[tuple[str | None, str | None]]:
        listed = self.core.list_namespaced_event("default", field_selector=f"involvedObject.name={profile}")
        return [(event.type, event.reason) for event in listed.items]

    def wait_for_event(self, profile: str, kind: str, reason: str, timeout: float = 15) -> None:
        """Until the profile has that event: the operator records it beside the status write that the caller
        waited for, not before it."""
        wait_until(lambda: (kind, reason) in self.events(profile), timeout, f"event {kind} {reason} on {profile}")

    # --- RuntimeClasses, NodeRuntimes --------------------------------------------------------------------------

    def runtime_class(self, name: str) -> dict[str, Any]:
        found = self.node_api.read_runtime_class(name)
        result: dict[str, Any] = self.node_api.api_client.sanitize_for_serialization(found)
        return result

    def node_runtime(self, node: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_cluster_custom_object(GROUP, VERSION, "noderuntimes", node)
        return result

    def handlers(self, node: str) -> dict[str, HandlerConfig]:
        """The handler entries of a node's NodeRuntime spec, by name, as its agent reads them (defaults applied:
        the operator leaves them out)."""
        entries = self.node_runtime(node).get("spec", {}).get("handlers", [])
        return {entry["name"]: HandlerConfig.model_validate(entry) for entry in entries}

    def handler(self, node: str, name: str) -> HandlerConfig | None:
        return self.handlers(node).get(name)

    def report(self, node: str, handlers: dict[str, bool | str], *, read: dict[str, Any] | None = None) -> None:
        """Write the NodeRuntime status as the node's agent would: True is ready, a string a failure reason.

        ``read`` is the NodeRuntime as the agent read it (an agent reports on the configuration it applied, and
        that spec may have changed since); by default the current one."""
        if read is None:
            read = self.node_runtime(node)
        configs = {entry["name"]: HandlerConfig.model_validate(entry) for entry in read["spec"].get("handlers", [])}
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        statuses = [
            {
                "name": name,
                "configDigest": configs[name].runtime_digest(),
                "ready": state is True,
                "reason": "" if state is True else str(state),
                "message": "" if state is True else f"{name}: {state} (simulated agent)",
                "lastProbeTime": now,
                "probeDurationSeconds": 0.25,
            }
            for name, state in handlers.items()
        ]
        status = {
            "observedGeneration": read["metadata"]["generation"],
            "runtime": {"name": "hulld", "version": "0.1.0", "ready": True},
            "handlers": statuses,
        }
        self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "noderuntimes", node, {"status": status}, _content_type="application/merge-patch+json"
        )

    def report_all_ready(self, node: str) -> None:
        current = self.node_runtime(node)
        handlers = [entry["name"] for entry in current["spec"].get("handlers", [])]
        self.report(node, dict.fromkeys(handlers, True), read=current)

    # --- cleanup -----------------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        for name in self.profiles:
            # Not "if it exists, delete it": a profile the test deleted can go (its finalizer removed) in between.
            self.delete_profile(name, missing_ok=True)
        for name in self.profiles:
            wait_until(functools.partial(self.profile_gone, name), 30, f"profile {name} to be deleted")
        for name in self.nodes:
            if self.exists(functools.partial(self.core.read_node, name)):
                self.core.delete_node(name)


@pytest.fixture
def cluster(kubehull_crds: KubeAPIServer, operator: OperatorProcess) -> Iterator[Cluster]:
    view = Cluster(kubehull_crds)
    yield view
    view.cleanup()
