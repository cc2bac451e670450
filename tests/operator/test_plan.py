"""The planner on hand-made snapshots: no cluster, every decision visible."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from kubehull_api.noderuntime import HandlerConfig, NodeRuntime
from kubehull_api.runtimeprofile import RuntimeProfile, RuntimeProfileStatus
from kubehull_operator.reconcile import placement, plan, rollout, runtimeclass, status
from kubehull_operator.reconcile.model import (
    ApplyRuntimeClass,
    CreateNodeRuntime,
    NodeRecord,
    RecordEvent,
    RuntimeClassRecord,
    SetNodeLabels,
    SetNodeRuntimeHandlers,
    SetProfileStatus,
    Snapshot,
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


def node_runtime(
    name: str,
    handlers: list[HandlerConfig],
    ready: dict[str, bool] | None = None,
    *,
    reported_on: list[HandlerConfig] | None = None,
) -> NodeRuntime:
    """A NodeRuntime with ``handlers`` in its spec and, with ``ready``, the agent's report on ``reported_on``
    (by default the spec's handlers; other configurations make a report the agent wrote before a change)."""
    status = None
    if ready is not None:
        digests = {config.name: config.runtime_digest() for config in reported_on or handlers}
        status = {
            "observedGeneration": 2 if reported_on is None else 1,
            "handlers": [{"name": key, "configDigest": digests[key], "ready": value} for key, value in ready.items()],
        }
    return NodeRuntime.model_validate(
        {
            "metadata": {"name": name, "generation": 2},
            "spec": {"handlers": [h.model_dump() for h in handlers]},
            "status": status,
        }
    )


def snapshot(
    profiles: list[RuntimeProfile], nodes: list[NodeRecord], node_runtimes: list[NodeRuntime] | None = None
) -> Snapshot:
    return Snapshot(
        profiles={p.name: p for p in profiles},
        nodes={n.name: n for n in nodes},
        node_runtimes={r.name: r for r in node_runtimes or []},
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
    created = [action for action in result.actions if isinstance(action, CreateNodeRuntime)]
    assert [len(action.handlers) for action in created] == [1, 1, 0, 0, 0]


def test_unavailable_nodes_use_up_the_budget() -> None:
    rp = profile("p", RUNC)
    config = placement.handler_config(rp)
    nodes = [node("a"), node("b")]
    runtimes = [node_runtime("a", [config], ready={"runc": False}), node_runtime("b", [])]
    result = plan.plan(snapshot([rp], nodes, runtimes), NOW)
    assert not [action for action in result.actions if isinstance(action, SetNodeRuntimeHandlers)]
    assert result.statuses["p"].nodes.failed == 1
    assert result.statuses["p"].failures[0].reason == "HandlerNotReady"


def test_label_kept_while_the_agent_catches_up_and_dropped_when_it_reports_failure() -> None:
    rp = profile("p", RUNC)
    config = placement.handler_config(rp)
    labelled = node("a", **{"handler.kubehull.io/runc": "true"})
    before = config.model_copy(update={"options": {"systemdCgroup": "true"}})
    lagging = node_runtime("a", [config], ready={"runc": True}, reported_on=[before])
    assert not [
        a for a in plan.plan(snapshot([rp], [labelled], [lagging]), NOW).actions if isinstance(a, SetNodeLabels)
    ]
    assert plan.plan(snapshot([rp], [labelled], [lagging]), NOW).statuses["p"].nodes.updating == 1
    failing = node_runtime("a", [config], ready={"runc": False})
    actions = plan.plan(snapshot([rp], [labelled], [failing]), NOW).actions
    assert SetNodeLabels(node="a", labels={"handler.kubehull.io/runc": None}) in actions


def test_reconfiguring_one_handler_leaves_the_others_ready() -> None:
    """The spec's generation moves with every handler; a report stays current for the handlers it is about."""
    gvisor_spec = {"handler": "gvisor", "runtime": {"engine": "gvisor", "options": {"platform": "ptrace"}}}
    runc, gvisor = profile("rc", RUNC), profile("gv", gvisor_spec)
    runc_config, gvisor_config = placement.handler_config(runc), placement.handler_config(gvisor)
    previous = gvisor_config.model_copy(update={"options": {}})
    labelled = node("a", **{"handler.kubehull.io/runc": "true", "handler.kubehull.io/gvisor": "true"})
    reported = node_runtime(
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
    state = snapshot([rp], [labelled], [node_runtime("a", [config], ready={"runc": True})])
    state = Snapshot(
        profiles=state.profiles,
        nodes=state.nodes,
        node_runtimes=state.node_runtimes,
        runtime_classes={"p": runtimeclass_record(rp)},
    )
    first = plan.plan(state, NOW)
    assert [a.reason for a in first.actions if isinstance(a, RecordEvent)] == ["Ready"]
    written = next(a.status for a in first.actions if isinstance(a, SetProfileStatus))
    later = NOW + datetime.timedelta(minutes=1)
    again = Snapshot(
        profiles={"p": rp.model_copy(update={"status": written})},
        nodes=state.nodes,
        node_runtimes=state.node_runtimes,
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
        node_runtimes={"a": node_runtime("a", [config])},
        runtime_classes={"p": runtimeclass_record(rp)},
    )
    assert plan.cleanup_pending(state, "p") == [
        "RuntimeClass p",
        "NodeRuntime a",
        "label handler.kubehull.io/runc on node a",
    ]
    placed = placement.place(state)
    assert rollout.planned_handlers(state, placed, rollout.states(state, placed)) == {"a": ()}


def test_new_runtime_classes_are_found_without_planning_the_nodes() -> None:
    new, edited = profile("new", RUNC), profile("edited", {**RUNC, "handler": "other"})
    hand_edited = runtimeclass_record(edited)
    hand_edited = dataclasses.replace(hand_edited, body={**hand_edited.body, "handler": "someone-elses"})
    state = Snapshot(
        profiles={"new": new, "edited": edited}, nodes={}, node_runtimes={}, runtime_classes={"edited": hand_edited}
    )
    # The hand-edited one is restored by the full plan, with the event that says so.
    assert plan.new_runtime_classes(state) == [ApplyRuntimeClass(body=runtimeclass.desired(new), resource_version=None)]


def test_a_status_that_only_counts_progress_is_told_apart() -> None:
    rp = profile("p", {**RUNC, "rollout": {"maxUnavailable": "100%"}})
    config = placement.handler_config(rp)
    nodes = [node("a"), node("b"), node("c")]

    def status_with(ready: dict[str, bool]) -> RuntimeProfileStatus:
        runtimes = [node_runtime(name, [config], ready={"runc": ok}) for name, ok in ready.items()]
        runtimes += [node_runtime(name, [config]) for name in "abc" if name not in ready]
        state = snapshot([rp], nodes, runtimes)
        state = dataclasses.replace(state, runtime_classes={"p": runtimeclass_record(rp)})
        return plan.plan(state, NOW).statuses["p"]

    none_ready, one_ready = status_with({}), status_with({"a": True})
    assert (none_ready.nodes.ready, one_ready.nodes.ready) == (0, 1)
    assert status.progress_only(none_ready, one_ready)
    assert not status.progress_only(None, one_ready)  # a profile's first status
    assert not status.progress_only(one_ready, status_with({"a": True, "b": False}))  # a failure: Degraded
    assert not status.progress_only(one_ready, status_with(dict.fromkeys("abc", True)))  # Ready turns True
