"""Namespace defaults (``spec.namespaceDefault``) against a real API server: the operator's admission policies set
the profile's RuntimeClass on new pods of covered namespaces, enforce it when asked, follow namespace labels,
are restored when edited and removed with the profile; two profiles claiming one namespace are a reported
conflict that the older one wins."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubehull_harness.waiting import wait_until
from tests.operator.conftest import Cluster, status_condition

pytestmark = [pytest.mark.cluster, pytest.mark.beside]

ADMISSION = ("admissionregistration.k8s.io", "v1")


class Tenants:
    """The test's namespaces (each with the default ServiceAccount pods need), its pods and admission objects."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.tenant = cluster.name("tenant")

    def namespace(self, suffix: str, *, tenant: str | None = None) -> str:
        name = self.cluster.name(suffix)
        labels = {"tenant": tenant} if tenant else {}
        self.cluster.core.create_namespace({"metadata": {"name": name, "labels": labels}})
        self.cluster.core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
        return name

    def label(self, namespace: str, tenant: str | None) -> None:
        self.cluster.core.patch_namespace(
            namespace, {"metadata": {"labels": {"tenant": tenant}}}, _content_type="application/merge-patch+json"
        )

    def pod(self, namespace: str, runtime_class: str | None = None) -> dict[str, Any]:
        """Create a pod (nothing runs it: admission is what is tested) and return it as admitted."""
        spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox"}]}
        if runtime_class is not None:
            spec["runtimeClassName"] = runtime_class
        body = {"metadata": {"generateName": "pod-"}, "spec": spec}
        created = self.cluster.core.create_namespaced_pod(namespace, body)
        result: dict[str, Any] = self.cluster.core.api_client.sanitize_for_serialization(created)
        return result

    def admitted_class(self, namespace: str, expected: str | None, runtime_class: str | None = None) -> dict[str, Any]:
        """A pod admitted with the RuntimeClass ``expected`` (None: none), once the API server has caught up
        with the policies and namespace labels (its caches follow them within moments)."""
        admitted: dict[str, Any] = {}

        def matches() -> bool:
            admitted.update(self.pod(namespace, runtime_class))
            return bool(admitted["spec"].get("runtimeClassName") == expected)

        wait_until(matches, 15, f"a pod in {namespace} admitted with RuntimeClass {expected}", interval=0.5)
        return admitted

    def refusal(self, namespace: str, runtime_class: str) -> ApiException:
        """The API server's refusal of a pod naming ``runtime_class``, once the enforcing policy is in force."""
        refusals: list[ApiException] = []

        def refused() -> bool:
            try:
                self.pod(namespace, runtime_class)
            except ApiException as error:
                refusals.append(error)
                return True
            return False

        wait_until(refused, 15, f"a pod in {namespace} naming {runtime_class} to be refused", interval=0.5)
        return refusals[-1]

    def admission(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.cluster.custom.get_cluster_custom_object(*ADMISSION, plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found


@pytest.fixture
def tenants(cluster: Cluster) -> Tenants:
    return Tenants(cluster)


def profile_spec(tenant: str, **default: Any) -> dict[str, Any]:
    return {
        "handler": "gvisor",
        "runtime": {"engine": "gvisor"},
        "namespaceDefault": {"namespaceSelector": {"matchLabels": {"tenant": tenant}}, **default},
    }


def coverage(cluster: Cluster, profile: str) -> dict[str, Any]:
    return dict((cluster.profile(profile).get("status") or {}).get("namespaces") or {})


def covered(cluster: Cluster, profile: str, names: list[str]) -> bool:
    """Whether the profile says, in one reading of its status, that it covers exactly ``names`` with its policies
    in force (its names can lead the condition: a handover lists the namespace while the policies still sync)."""
    status = cluster.profile(profile).get("status") or {}
    condition = status_condition(status, "NamespaceDefault")
    listed = (status.get("namespaces") or {}).get("names")
    return bool(condition.get("reason") == "NamespacesCovered" and listed == names)


def test_pods_in_covered_namespaces_get_the_class_and_enforcement_refuses_others(
    cluster: Cluster, tenants: Tenants
) -> None:
    cluster.create_node("a")
    cluster.node_api.create_runtime_class({"metadata": {"name": cluster.name("other")}, "handler": "runc"})
    other = cluster.name("other")
    ci = tenants.namespace("ci", tenant=tenants.tenant)
    plain = tenants.namespace("plain")
    exempt = tenants.namespace("exempt", tenant=tenants.tenant)
    profile = cluster.create_profile("gvisor", profile_spec(tenants.tenant, exemptNamespaces=[exempt]))
    wait_until(lambda: covered(cluster, profile, [ci]), 30, "the profile to cover its namespace")
    assert cluster.condition(profile, "NamespaceDefault")["status"] == "True"
    assert coverage(cluster, profile) == {"count": 1, "names": [ci], "conflicts": []}
    cluster.wait_for_event(profile, "Normal", "NamespacesCovered")

    admitted = tenants.admitted_class(ci, profile)
    # The RuntimeClass's own admission ran on the mutated pod: its overhead and its node selector are there.
    assert admitted["spec"]["overhead"] == {"cpu": "100m", "memory": "64Mi"}
    assert admitted["spec"]["nodeSelector"] == {"handler.kubehull.io/gvisor": "true"}
    assert tenants.pod(ci, runtime_class=other)["spec"]["runtimeClassName"] == other  # not enforced
    assert "runtimeClassName" not in tenants.pod(plain)["spec"]
    assert "runtimeClassName" not in tenants.pod(exempt)["spec"]

    # Namespaces that gain or lose the label are covered or released for new pods.
    tenants.label(plain, tenants.tenant)
    tenants.label(ci, None)
    tenants.admitted_class(plain, profile)
    tenants.admitted_class(ci, None)
    wait_until(lambda: covered(cluster, profile, [plain]), 30, "the status to follow the labels")

    # Enforced: another class is refused with the profile named; none still gets the profile's.
    cluster.patch_profile(profile, {"spec": {"namespaceDefault": {"enforce": True}}})
    refused = tenants.refusal(plain, other)
    assert refused.status in (403, 422), refused.body
    assert f"namespace {plain} runs its pods under RuntimeProfile {profile}" in str(refused.body)
    assert tenants.pod(plain)["spec"]["runtimeClassName"] == profile
    name = f"kubehull-{profile}"

    # Hand edits are undone; the profile's deletion takes its policies along.
    policy = tenants.admission("mutatingadmissionpolicies", name)
    assert policy is not None
    policy["spec"]["mutations"][0]["applyConfiguration"]["expression"] = "Object{}"
    cluster.custom.replace_cluster_custom_object(*ADMISSION, "mutatingadmissionpolicies", name, policy)
    cluster.custom.delete_cluster_custom_object(*ADMISSION, "mutatingadmissionpolicybindings", name)

    def restored() -> bool:
        current = tenants.admission("mutatingadmissionpolicies", name)
        binding = tenants.admission("mutatingadmissionpolicybindings", name)
        expression = (current or {}).get("spec", {}).get("mutations", [{}])[0].get("applyConfiguration", {})
        return binding is not None and profile in str(expression)

    wait_until(restored, 30, "the policy and its binding restored")
    cluster.delete_profile(profile)
    wait_until(functools.partial(cluster.profile_gone, profile), 30, "the profile deleted")
    for plural in ("mutatingadmissionpolicies", "mutatingadmissionpolicybindings", "validatingadmissionpolicies"):
        assert tenants.admission(plural, name) is None
    tenants.admitted_class(plain, None)


def test_two_profiles_claiming_a_namespace_the_older_wins_and_hands_over(cluster: Cluster, tenants: Tenants) -> None:
    cluster.create_node("a")
    shared = tenants.namespace("shared", tenant=tenants.tenant)
    older = cluster.create_profile("older", profile_spec(tenants.tenant))
    wait_until(lambda: covered(cluster, older, [shared]), 30, "the older profile to cover the namespace")
    cluster.wait_past_creation(older)
    newer = cluster.create_profile("newer", {**profile_spec(tenants.tenant), "handler": "gvisor-b"})
    wait_until(
        lambda: cluster.condition(newer, "NamespaceDefault").get("reason") == "NamespaceConflict",
        30,
        "the newer profile to report the conflict",
    )
    assert f"{shared} (RuntimeProfile {older})" in cluster.condition(newer, "NamespaceDefault")["message"]
    assert coverage(cluster, newer) == {"count": 0, "names": [], "conflicts": [shared]}
    cluster.wait_for_event(newer, "Warning", "NamespaceConflict")
    assert tenants.admitted_class(shared, older)

    cluster.delete_profile(older)
    wait_until(lambda: covered(cluster, newer, [shared]), 30, "the newer profile to take the namespace over")
    assert cluster.condition(newer, "NamespaceDefault")["status"] == "True"
    tenants.admitted_class(shared, newer)
