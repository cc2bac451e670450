"""The planner on hand-made snapshots: no cluster, every decision visible."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from kubehull_api.nodehandler import HandlerConfig, object_name
from kubehull_api.runtimeprofile import RuntimeProfile, RuntimeProfileStatus
from kubehull_operator.reconcile import placement, plan, rollout, runtimeclass, status
from kubehull_operator.reconcile.model import (
    ApplyRuntimeClass,
    CreateNodeHandler,
    DeleteNodeHandler,
    NodeHandlerRecord,
    NodeRecord,
    RecordEvent,
    RuntimeClassRecord,
    SetNodeHandler,
    SetNodeLabels,
    SetProfileStatus,
    Snapshot,
    node_handler_record,
    runtime_class_record,
)

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)


def profile(name: str, spec: dict[str, Any], *, age: int = 0, uid: str = "") -> RuntimeProfile:
    created = (NOW - datetime.timedelta(minutes=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return RuntimeProfile.model_validate(
        {
            "metadata": {"name": name, "uid": uid or f"uid-{name}", "generation": 1, "creationTimestamp": created},
            "spec": spec,
        }
    )


def node(name: str, **labels: str) -> NodeRecord:
    return NodeRecord(name=name, uid=f"uid-{name}", resource_version="1", labels=labels)


def node_handlers(
    name: str,
    handlers: list[HandlerConfig],
    ready: dict[str, bool] | None = None,
    *,
    reported_on: list[HandlerConfig] | None = None,
    deleting: bool = False,
) -> list[NodeHandlerRecord]:
    """The NodeHandlers of node ``name``, one per handler, each with, if ``ready`` names it, the agent's report on
    ``reported_on``'s configuration of it (by default the spec's; another makes a report written before a
    change)."""
    digests = {config.name: config.runtime_digest() for config in reported_on or handlers}
    records = []
    for config in handlers:
        status = None
        if ready is not None and config.name in ready:
            status = {"observedGeneration": 1, "configDigest": digests[config.name], "ready": ready[config.name]}
        metadata: dict[str, Any] = {
            "name": object_name(name, config.name),
            "resourceVersion": "5",
            "finalizers": ["kubehull.io/node-agent"],
        }
        if deleting:
            metadata["deletionTimestamp"] = "2026-11-28T12:00:00Z"
        body = {"metadata": metadata, "spec": {"nodeName": name, "handler": config.model_dump(by_alias=True)}}
        records.append(node_handler_record({**body, "status": status}))
    return records


def snapshot(
    profiles: list[RuntimeProfile], nodes: list[NodeRecord], handlers: list[list[NodeHandlerRecord]] | None = None
) -> Snapshot:
    return Snapshot(
        profiles={p.name: p for p in profiles},
        nodes={n.name: n for n in nodes},
        node_handlers={record.name: record for records in handlers or [] for record in records},
        runtime_classes={},
    )


RUNC = {"handler": "runc", "runtime": {"engine": "runc"}}


def test_newer_profile_with_other_settings_conflicts_same_settings_share() -> None:
    old = profile("old", {"handler": "gv", "runtime": {"engine": "gvisor"}}, age=10)
    same = profile("same", {"handler": "gv", "runtime": {"engine": "gvisor"}}, age=5)
    other = profile("other", {"handler": "gv", "runtime": {"engine": "gvisor", "options": {"platform": "kvm"}}})
    placed = placement.place(snapshot([other, same, old], [node("a")]))
    assert list(placed.active) == ["old", "same"]
    assert "RuntimeProfile old" in placed.conflicts["other"]
    assert placed.handlers_on("a")["gv"].profile == "old"


def test_percentage_budget_rounds_up_and_new_nodes_are_created_with_their_turn() -> None:
    rp = profile("p", {**RUNC, "rollout": {"maxUnavailable": "25%"}})
    nodes = [node(f"n{i}") for i in range(5)]
    assert rp.spec.rollout.budget(5) == 2
    result = plan.plan(snapshot([rp], nodes), NOW)
    created = [action.node.name for action in result.actions if isinstance(action, CreateNodeHandler)]
    assert created == ["n0", "n1"]


def test_unavailable_nodes_use_up_the_budget() -> None:
    rp = profile("p", RUNC)
    config = placement.handler_config(rp)
    nodes = [node("a"), node("b")]
    runtimes = [node_handlers("a", [config], ready={"runc": False}), node_handlers("b", [])]
    result = plan.plan(snapshot([rp], nodes, runtimes), NOW)
    assert not [action for action in result.actions if isinstance(action, SetNodeHandler | CreateNodeHandler)]
    assert result.statuses["p"].nodes.failed == 1
    assert result.statuses["p"].failures[0].reason == "HandlerNotReady"


def test_label_kept_while_the_agent_catches_up_and_dropped_when_it_reports_failure() -> None:
    rp = profile("p", RUNC)
    config = placement.handler_config(rp)
    labelled = node("a", **{"handler.kubehull.io/runc": "true"})
    before = config.model_copy(update={"options": {"systemdCgroup": "true"}})
    lagging = node_handlers("a", [config], ready={"runc": True}, reported_on=[before])
    assert not [
        a for a in plan.plan(snapshot([rp], [labelled], [lagging]), NOW).actions if isinstance(a, SetNodeLabels)
    ]
    assert plan.plan(snapshot([rp], [labelled], [lagging]), NOW).statuses["p"].nodes.updating == 1
    failing = node_handlers("a", [config], ready={"runc": False})
    actions = plan.plan(snapshot([rp], [labelled], [failing]), NOW).actions
    assert SetNodeLabels(node="a", labels={"handler.kubehull.io/runc": None}) in actions


def test_reconfiguring_one_handler_leaves_the_others_ready() -> None:
    """A report stays current for the configuration it is about, whatever happens to the node's other handlers."""
    gvisor_spec = {"handler": "gvisor", "runtime": {"engine": "gvisor", "options": {"platform": "ptrace"}}}
    runc, gvisor = profile("rc", RUNC), profile("gv", gvisor_spec)
    runc_config, gvisor_config = placement.handler_config(runc), placement.handler_config(gvisor)
    previous = gvisor_config.model_copy(update={"options": {}})
    labelled = node("a", **{"handler.kubehull.io/runc": "true", "handler.kubehull.io/gvisor": "true"})
    reported = node_handlers(
        "a", [runc_config, gvisor_config], ready={"runc": True, "gvisor": True}, reported_on=[runc_config, previous]
    )
    result = plan.plan(snapshot([runc, gvisor], [labelled], [reported]), NOW)
    assert result.statuses["rc"].nodes.ready == 1
    assert result.statuses["gv"].nodes.updating == 1
    assert not [a for a in result.actions if isinstance(a, SetNodeLabels)]  # both labels stay


def test_status_keeps_transition_times_and_emits_ready_once() -> None:
    rp = profile("p", RUNC)
    config = placement.handler_config(rp)
    labelled = node("a", **{"handler.kubehull.io/runc": "true"})
    state = snapshot([rp], [labelled], [node_handlers("a", [config], ready={"runc": True})])
    state = Snapshot(
        profiles=state.profiles,
        nodes=state.nodes,
        node_handlers=state.node_handlers,
        runtime_classes={"p": runtimeclass_record(rp)},
    )
    first = plan.plan(state, NOW)
    assert [a.reason for a in first.actions if isinstance(a, RecordEvent)] == ["Ready"]
    written = next(a.status for a in first.actions if isinstance(a, SetProfileStatus))
    later = NOW + datetime.timedelta(minutes=1)
    again = Snapshot(
        profiles={"p": rp.model_copy(update={"status": written})},
        nodes=state.nodes,
        node_handlers=state.node_handlers,
        runtime_classes=state.runtime_classes,
    )
    second = plan.plan(again, later)
    assert second.actions == []  # nothing changed: no write, no event
    assert second.statuses["p"] == written


def runtimeclass_record(rp: RuntimeProfile) -> RuntimeClassRecord:
    body = runtimeclass.desired(rp)
    return runtime_class_record({**body, "metadata": {**body["metadata"], "resourceVersion": "7"}})


def test_runtime_class_quantities_compare_by_value() -> None:
    rp = profile("p", {**RUNC, "overhead": {"podFixed": {"cpu": "0.5", "memory": "64Mi"}}})
    wanted = runtimeclass.desired(rp)
    canonical = {**wanted, "overhead": {"podFixed": {"cpu": "500m", "memory": "64Mi"}}}
    assert runtimeclass.matches(canonical, wanted)
    assert not runtimeclass.matches({**wanted, "overhead": {"podFixed": {"cpu": "1"}}}, wanted)


def test_cleanup_pending_lists_what_a_deleted_profile_left() -> None:
    rp = profile("p", RUNC)
    config = placement.handler_config(rp)
    deleting = rp.model_copy(update={"metadata": {**rp.metadata, "deletionTimestamp": "2026-11-28T12:00:00Z"}})
    state = Snapshot(
        profiles={"p": deleting},
        nodes={"a": node("a", **{"handler.kubehull.io/runc": "true"})},
        node_handlers={record.name: record for record in node_handlers("a", [config])},
        runtime_classes={"p": runtimeclass_record(rp)},
    )
    assert plan.cleanup_pending(state, "p") == [
        "RuntimeClass p",
        "NodeHandler a.runc",
        "label handler.kubehull.io/runc on node a",
    ]
    placed = placement.place(state)
    assert rollout.planned_handlers(state, placed, rollout.states(state, placed)) == {"a": ()}


def test_new_runtime_classes_are_found_without_planning_the_nodes() -> None:
    new, edited = profile("new", RUNC), profile("edited", {**RUNC, "handler": "other"})
    hand_edited = runtimeclass_record(edited)
    hand_edited = dataclasses.replace(hand_edited, body={**hand_edited.body, "handler": "someone-elses"})
    state = Snapshot(
        profiles={"new": new, "edited": edited}, nodes={}, node_handlers={}, runtime_classes={"edited": hand_edited}
    )
    # The hand-edited one is restored by the full plan, with the event that says so.
    assert plan.new_runtime_classes(state) == [ApplyRuntimeClass(body=runtimeclass.desired(new), resource_version=None)]


def test_a_status_that_only_counts_progress_is_told_apart() -> None:
    rp = profile("p", {**RUNC, "rollout": {"maxUnavailable": "100%"}})
    config = placement.handler_config(rp)
    nodes = [node("a"), node("b"), node("c")]

    def status_with(ready: dict[str, bool]) -> RuntimeProfileStatus:
        runtimes = [node_handlers(name, [config], ready={"runc": ok}) for name, ok in ready.items()]
        runtimes += [node_handlers(name, [config]) for name in "abc" if name not in ready]
        state = snapshot([rp], nodes, runtimes)
        state = dataclasses.replace(state, runtime_classes={"p": runtimeclass_record(rp)})
        return plan.plan(state, NOW).statuses["p"]

    none_ready, one_ready = status_with({}), status_with({"a": True})
    assert (none_ready.nodes.ready, one_ready.nodes.ready) == (0, 1)
    assert status.progress_only(none_ready, one_ready)
    assert not status.progress_only(None, one_ready)  # a profile's first status
    assert not status.progress_only(one_ready, status_with({"a": True, "b": False}))  # a failure: Degraded
    assert not status.progress_only(one_ready, status_with(dict.fromkeys("abc", True)))  # Ready turns True


def test_node_handlers_follow_the_nodes_and_handlers() -> None:
    """One NodeHandler per node and desired handler: created, its configuration replaced, deleted when the handler
    leaves the node, and let go by the operator itself when the node is gone (no agent to do it)."""
    rp = profile("p", {**RUNC, "rollout": {"maxUnavailable": "100%"}})
    config = placement.handler_config(rp)
    older = config.model_copy(update={"options": {"systemdCgroup": "true"}})
    other = placement.handler_config(profile("q", {"handler": "gone", "runtime": {"engine": "runc"}}))
    state = snapshot(
        [rp],
        [node("new"), node("old"), node("extra")],
        [node_handlers("old", [older]), node_handlers("extra", [config, other]), node_handlers("lost", [config])],
    )
    placed = placement.place(state)
    actions = plan.node_handler_actions(state, rollout.planned_handlers(state, placed, rollout.states(state, placed)))
    assert actions == [
        DeleteNodeHandler(name="extra.gone"),
        CreateNodeHandler(node=node("new"), handler=config),
        SetNodeHandler(name="old.runc", handler=config),
        DeleteNodeHandler(name="lost.runc", node_gone=True),
    ]


def test_a_handler_being_let_go_is_created_again_only_once_gone() -> None:
    rp = profile("p", RUNC)
    config = placement.handler_config(rp)
    leaving = snapshot([rp], [node("a")], [node_handlers("a", [config], deleting=True)])
    assert not [a for a in plan.plan(leaving, NOW).actions if isinstance(a, CreateNodeHandler | DeleteNodeHandler)]
    gone = snapshot([rp], [node("a")])
    assert CreateNodeHandler(node=node("a"), handler=config) in plan.plan(gone, NOW).actions


def test_a_node_handler_record_reads_only_what_is_about_its_spec() -> None:
    rp = profile("p", RUNC)
    config = placement.handler_config(rp)
    before = config.model_copy(update={"options": {"systemdCgroup": "true"}})
    (current,) = node_handlers("a", [config], ready={"runc": True})
    (stale,) = node_handlers("a", [config], ready={"runc": True}, reported_on=[before])
    assert current.handler_status is not None
    assert current.handler_status.ready
    assert stale.report is not None
    assert stale.handler_status is None
    assert (current.node, current.finalized, current.deleting) == ("a", True, False)
    # Records of one configuration share one parsed object (100 000 NodeHandlers at 5000 nodes x 20 handlers).
    assert current.handler is stale.handler
