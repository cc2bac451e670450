"""A RuntimeProfile from creation to deletion: RuntimeClass, NodeRuntimes, node labels, status, events."""

from __future__ import annotations

import functools

import pytest

from kubehull_harness.operators import OperatorProcess
from kubehull_harness.waiting import wait_until
from tests.operator.conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.beside]

GVISOR = {
    "handler": "gvisor",
    "runtime": {"engine": "gvisor", "options": {"platform": "systrap"}},
    "tolerations": [{"key": "pool", "operator": "Equal", "value": "untrusted", "effect": "NoSchedule"}],
    "rollout": {"maxUnavailable": "100%"},
}


def test_create_update_delete(cluster: Cluster) -> None:
    nodes = [cluster.create_node(f"n{i}") for i in range(2)]
    profile = cluster.create_profile("gv", GVISOR)

    runtime_class = wait_until(lambda: cluster.runtime_class(profile), what="the RuntimeClass")
    assert runtime_class["handler"] == "gvisor"
    assert runtime_class["overhead"]["podFixed"] == {"cpu": "100m", "memory": "64Mi"}  # gvisor's default
    assert runtime_class["scheduling"]["nodeSelector"] == {"handler.kubehull.io/gvisor": "true"}
    assert runtime_class["scheduling"]["tolerations"] == GVISOR["tolerations"]
    owner = runtime_class["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("RuntimeProfile", profile, True)

    for node in nodes:
        entry = wait_until(functools.partial(cluster.handler, node, "gvisor"), what=f"gvisor on {node}")
        assert entry.path == "/usr/bin/runsc"
        assert entry.runtime_type == "oci"
        assert entry.options == {"platform": "systrap"}
        assert (entry.profile, entry.profile_generation) == (profile, 1)
        # What equals the model's default is not written: it would be stored and sent with every write.
        written = cluster.node_runtime(node)["spec"]["handlers"][0]
        assert "privilegedWithoutHostDevices" not in written
        assert "allowedAnnotations" not in written
    # The status follows the NodeRuntime writes (its own write may land a moment later).
    wait_until(lambda: cluster.condition(profile, "Ready").get("reason") == "RolloutInProgress", what="rollout")
    assert not cluster.handler_labels(nodes[0])

    for node in nodes:
        cluster.report(node, {"gvisor": True})
    wait_until(lambda: cluster.condition(profile, "Ready").get("status") == "True", what="Ready")
    status = cluster.profile(profile)["status"]
    assert status["ready"] == "2/2"
    assert status["nodes"] == {"desired": 2, "ready": 2, "updating": 0, "failed": 0}
    assert status["observedGeneration"] == 1
    assert status["runtimeClassName"] == profile
    for node in nodes:
        assert cluster.handler_labels(node) == {"handler.kubehull.io/gvisor": "true"}
    cluster.wait_for_event(profile, "Normal", "Ready")

    # An update reaches the nodes with the new generation; the labels stay while the agents catch up.
    cluster.patch_profile(profile, {"spec": {"runtime": {"options": {"platform": "ptrace"}}}})
    for node in nodes:

        def updated(node: str = node) -> bool:
            return bool(cluster.handlers(node)["gvisor"].options == {"platform": "ptrace"})

        wait_until(updated, what=f"the new option on {node}")
        assert cluster.handlers(node)["gvisor"].profile_generation == 2
        assert cluster.handler_labels(node) == {"handler.kubehull.io/gvisor": "true"}
    wait_until(lambda: cluster.profile(profile)["status"]["observedGeneration"] == 2, what="observedGeneration 2")
    assert cluster.condition(profile, "Ready")["status"] == "False"

    # Deletion: the finalizer holds the profile until RuntimeClass, handler entries and labels are gone.
    cluster.delete_profile(profile)
    wait_until(lambda: cluster.profile_gone(profile), what="the profile to go")
    assert not cluster.exists(lambda: cluster.runtime_class(profile))
    for node in nodes:
        assert cluster.handlers(node) == {}
        assert cluster.handler_labels(node) == {}


def test_failing_handler_degrades_and_loses_its_label(cluster: Cluster) -> None:
    nodes = [cluster.create_node(f"n{i}") for i in range(2)]
    profile = cluster.create_profile("gv", GVISOR)
    for node in nodes:
        wait_until(functools.partial(cluster.handler, node, "gvisor"), what=f"gvisor on {node}")
        cluster.report(node, {"gvisor": True})
    wait_until(lambda: cluster.condition(profile, "Ready").get("status") == "True", what="Ready")

    cluster.report(nodes[1], {"gvisor": "BinaryNotFound"})
    wait_until(lambda: cluster.condition(profile, "Degraded").get("status") == "True", what="Degraded")
    status = cluster.profile(profile)["status"]
    assert status["nodes"]["failed"] == 1
    assert status["failures"] == [
        {"node": nodes[1], "reason": "BinaryNotFound", "message": "gvisor: BinaryNotFound (simulated agent)"}
    ]
    assert cluster.condition(profile, "Ready")["reason"] == "NodesFailed"
    wait_until(lambda: cluster.handler_labels(nodes[1]) == {}, what="the label to go from the failing node")
    assert cluster.handler_labels(nodes[0]) == {"handler.kubehull.io/gvisor": "true"}
    cluster.wait_for_event(profile, "Warning", "NodesFailed")


def test_runtime_class_drift_is_corrected(cluster: Cluster) -> None:
    cluster.create_node("n0")
    profile = cluster.create_profile("rc", {"handler": "runc", "runtime": {"engine": "runc"}})
    wait_until(lambda: cluster.runtime_class(profile), what="the RuntimeClass")

    cluster.node_api.patch_runtime_class(profile, {"scheduling": {"nodeSelector": {"anything": "goes"}}})
    wait_until(
        lambda: cluster.runtime_class(profile)["scheduling"]["nodeSelector"] == {"handler.kubehull.io/runc": "true"},
        what="the RuntimeClass to be restored",
    )

    cluster.node_api.delete_runtime_class(profile)
    wait_until(lambda: cluster.runtime_class(profile)["handler"] == "runc", what="the RuntimeClass to be recreated")
    cluster.wait_for_event(profile, "Warning", "RuntimeClassRestored")


def test_foreign_runtime_class_is_never_overwritten(cluster: Cluster) -> None:
    foreign = cluster.name("foreign")
    cluster.node_api.create_runtime_class(
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": foreign},
            "handler": "somebody-elses",
        }
    )
    try:
        profile = cluster.create_profile(
            "clash", {"handler": "runc", "runtime": {"engine": "runc"}, "runtimeClassName": foreign}
        )
        wait_until(
            lambda: cluster.condition(profile, "Ready").get("reason") == "RuntimeClassConflict",
            what="the clash to be reported",
        )
        assert cluster.condition(profile, "RuntimeClassReady")["status"] == "False"
        assert "not managed by this profile" in cluster.condition(profile, "Ready")["message"]
        assert cluster.runtime_class(foreign)["handler"] == "somebody-elses"
        assert "ownerReferences" not in cluster.runtime_class(foreign)["metadata"]
        cluster.delete_profile(profile)
        wait_until(lambda: cluster.profile_gone(profile), what="the profile to go")
        assert cluster.runtime_class(foreign)["handler"] == "somebody-elses"  # and not deleted with it
    finally:
        cluster.node_api.delete_runtime_class(foreign)


def test_node_relabelled_into_and_out_of_a_profile(cluster: Cluster) -> None:
    node = cluster.create_node("n0")
    profile = cluster.create_profile(
        "pool",
        {"handler": "runc", "runtime": {"engine": "runc"}, "nodeSelector": {"matchLabels": {"pool": cluster.prefix}}},
    )
    wait_until(lambda: cluster.condition(profile, "Ready").get("reason") == "NoMatchingNodes", what="NoMatchingNodes")
    # The profile's status and the node's NodeRuntime are written independently: wait for the NodeRuntime.
    wait_until(lambda: cluster.handlers(node) == {}, what="the node's NodeRuntime, without handlers")

    cluster.label_node(node, pool=cluster.prefix)
    wait_until(lambda: "runc" in cluster.handlers(node), what="the handler on the relabelled node")
    cluster.report(node, {"runc": True})
    wait_until(lambda: cluster.handler_labels(node) == {"handler.kubehull.io/runc": "true"}, what="the label")

    cluster.label_node(node, pool=None)
    wait_until(lambda: cluster.handlers(node) == {}, what="the handler to leave")
    wait_until(lambda: cluster.handler_labels(node) == {}, what="the label to leave")
    # The label left first: the node stopped attracting the handler's pods before its NodeRuntime dropped the
    # handler. Nothing else writes either object here, and this API server's resourceVersions are etcd's
    # revisions, one sequence over every object.
    label_removed = int(cluster.core.read_node(node).metadata.resource_version)
    assert label_removed < int(cluster.node_runtime(node)["metadata"]["resourceVersion"])
    wait_until(lambda: cluster.profile(profile)["status"]["nodes"]["desired"] == 0, what="desired 0")


def test_overlapping_profiles_share_nodes(cluster: Cluster) -> None:
    both = cluster.create_node("both", pool="a", secure="yes")
    only_a = cluster.create_node("a", pool="a")
    one = cluster.create_profile(
        "one",
        {
            "handler": "runc",
            "runtime": {"engine": "runc"},
            "nodeSelector": {"matchLabels": {"kubehull-test": cluster.prefix}},
            "rollout": {"maxUnavailable": 2},
        },
    )
    two = cluster.create_profile(
        "two",
        {
            "handler": "gvisor",
            "runtime": {"engine": "gvisor"},
            "nodeSelector": {
                "matchLabels": {"kubehull-test": cluster.prefix},
                "matchExpressions": [{"key": "secure", "operator": "Exists"}],
            },
        },
    )
    wait_until(lambda: set(cluster.handlers(both)) == {"runc", "gvisor"}, what="both handlers on the shared node")
    wait_until(lambda: set(cluster.handlers(only_a)) == {"runc"}, what="one handler on the other node")
    cluster.report_all_ready(both)
    cluster.report_all_ready(only_a)
    wait_until(lambda: cluster.profile(one)["status"]["ready"] == "2/2", what="profile one 2/2")
    wait_until(lambda: cluster.profile(two)["status"]["ready"] == "1/1", what="profile two 1/1")
    assert cluster.handler_labels(both) == {"handler.kubehull.io/runc": "true", "handler.kubehull.io/gvisor": "true"}

    cluster.delete_profile(two)  # the other profile's handler stays where it was
    wait_until(lambda: cluster.profile_gone(two), what="profile two to go")
    assert set(cluster.handlers(both)) == {"runc"}
    assert cluster.handler_labels(both) == {"handler.kubehull.io/runc": "true"}


def test_conflicting_profiles_newer_loses_until_older_goes(cluster: Cluster) -> None:
    node = cluster.create_node("n0")
    older = cluster.create_profile("older", {"handler": "gv", "runtime": {"engine": "gvisor"}})
    wait_until(lambda: getattr(cluster.handler(node, "gv"), "profile", None) == older, what="the older's handler")
    cluster.wait_past_creation(older)
    newer = cluster.create_profile(
        "newer", {"handler": "gv", "runtime": {"engine": "gvisor", "options": {"platform": "kvm"}}}
    )
    wait_until(lambda: cluster.condition(newer, "Ready").get("reason") == "HandlerConflict", what="HandlerConflict")
    assert older in cluster.condition(newer, "Ready")["message"]
    assert not cluster.exists(lambda: cluster.runtime_class(newer))
    assert cluster.handlers(node)["gv"].options == {}
    cluster.wait_for_event(newer, "Warning", "HandlerConflict")

    # The same handler with the same settings is no conflict.
    same = cluster.create_profile("same", {"handler": "gv", "runtime": {"engine": "gvisor"}})
    wait_until(lambda: cluster.condition(same, "RuntimeClassReady").get("status") == "True", what="same: synced")

    cluster.delete_profile(older)
    wait_until(lambda: cluster.profile_gone(older), what="the older to go")
    # The oldest profile left now owns the handler: "newer" takes over, and "same" conflicts with it.
    wait_until(lambda: cluster.handlers(node)["gv"].options == {"platform": "kvm"}, what="'newer' to take over")
    assert cluster.handlers(node)["gv"].profile == newer
    wait_until(lambda: cluster.condition(newer, "RuntimeClassReady").get("status") == "True", what="its RuntimeClass")
    wait_until(lambda: cluster.condition(same, "Ready").get("reason") == "HandlerConflict", what="'same' conflicts")


def test_deleted_node_loses_its_node_runtime(cluster: Cluster) -> None:
    node = cluster.create_node("n0")
    wait_until(lambda: cluster.exists(lambda: cluster.node_runtime(node)), what="the NodeRuntime")
    runtime = cluster.node_runtime(node)
    assert runtime["metadata"]["ownerReferences"][0]["kind"] == "Node"
    cluster.core.delete_node(node)
    wait_until(lambda: not cluster.exists(lambda: cluster.node_runtime(node)), what="the NodeRuntime to go")


def test_metrics_are_exported(cluster: Cluster, operator: OperatorProcess) -> None:
    node = cluster.create_node("n0")
    profile = cluster.create_profile("m", {"handler": "runc", "runtime": {"engine": "runc"}})
    wait_until(lambda: "runc" in cluster.handlers(node), what="the handler")
    cluster.report(node, {"runc": True})
    wait_until(lambda: cluster.condition(profile, "Ready").get("status") == "True", what="Ready")
    gauge = f'kubehull_operator_profile_nodes{{profile="{profile}",state="ready"}} 1.0'
    wait_until(lambda: gauge in operator.metrics(), what="the profile's node gauge")
    text = operator.metrics()
    assert 'kubehull_operator_reconciles_total{kind="NodeRuntime",result="ok"}' in text
    assert 'kubehull_operator_reconciles_total{kind="RuntimeClass",result="ok"}' in text
    assert "kubehull_operator_reconcile_duration_seconds_bucket" in text
    assert 'kubehull_operator_profiles{condition="Ready",status="True"}' in text
    assert "kubehull_operator_leader 1.0" in text
