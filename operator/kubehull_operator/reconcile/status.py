"""Each profile's status, aggregated from the NodeRuntimes, and the events its changes deserve.

Conditions follow the Kubernetes conventions: ``Ready`` sums up ``RuntimeClassReady`` and ``NodesReady``;
``Degraded`` is True while the handler fails on some node. A condition's lastTransitionTime changes only when
its status does. Events mark the moments an admin cares about: the profile became Ready, or stopped being
Ready because of a conflict or failing nodes; its namespace default covering its namespaces, or losing some to
an older profile.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping

from kubehull_api.common import Condition, ConditionStatus
from kubehull_api.runtimeprofile import MAX_FAILURES, NodeCounts, NodeFailure, RuntimeProfile, RuntimeProfileStatus
from kubehull_operator.reconcile import rollout
from kubehull_operator.reconcile.model import Action, RecordEvent, SetProfileStatus, Snapshot
from kubehull_operator.reconcile.namespaces import Coverage
from kubehull_operator.reconcile.placement import Placement, selects
from kubehull_operator.reconcile.runtimeclass import Outcome

# Reasons of Ready=False that deserve a Warning event (a rollout in progress does not).
WARN_REASONS = {"HandlerConflict", "RuntimeClassConflict", "NodesFailed", "NamespaceConflict"}


def _condition(kind: str, ready: bool, reason: str, message: str, generation: int) -> Condition:
    return Condition(
        type=kind,
        status=ConditionStatus.TRUE if ready else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        last_transition_time=datetime.datetime.min.replace(tzinfo=datetime.UTC),  # set by _stamp
        observed_generation=generation,
    )


def _stamp(
    conditions: Iterable[Condition], previous: RuntimeProfileStatus | None, now: datetime.datetime
) -> list[Condition]:
    before = {condition.type: condition for condition in (previous.conditions if previous else [])}
    stamped = []
    for condition in conditions:
        old = before.get(condition.type)
        since = old.last_transition_time if old is not None and old.status == condition.status else now
        stamped.append(condition.model_copy(update={"last_transition_time": since}))
    return stamped


def _nodes(
    snapshot: Snapshot, placement: Placement, node_states: rollout.States, profile: RuntimeProfile
) -> tuple[NodeCounts, list[NodeFailure]]:
    if profile.name not in placement.active:  # a conflicting profile: selected, but nothing applied
        desired = sum(selects(profile, node) for node in snapshot.nodes.values())
        return NodeCounts(desired=desired, updating=desired), []
    states = node_states[profile.name]
    failures = []
    for node in sorted(node for node, state in states.items() if state is rollout.NodeState.FAILED):
        status = snapshot.node_runtimes[node].handler_status(profile.spec.handler)
        reason = (status.reason if status else "") or "HandlerNotReady"
        failures.append(NodeFailure(node=node, reason=reason, message=status.message if status else ""))
    counts = NodeCounts(
        desired=len(states),
        ready=sum(state is rollout.NodeState.READY for state in states.values()),
        failed=len(failures),
        updating=sum(state in (rollout.NodeState.PENDING, rollout.NodeState.UPDATING) for state in states.values()),
    )
    return counts, failures[:MAX_FAILURES]


def _namespace_default(
    profile: RuntimeProfile, cover: Coverage | None, in_place: bool, runtime_class: Outcome
) -> Condition:
    generation, class_name = profile.generation, profile.runtime_class_name
    if cover is None:
        return _condition("NamespaceDefault", False, runtime_class.reason, runtime_class.message, generation)
    if not in_place:
        reason = "PolicySyncing" if runtime_class.reason != "RuntimeClassConflict" else runtime_class.reason
        message = f"writing the admission policies that give pods RuntimeClass {class_name}"
        return _condition("NamespaceDefault", False, reason, message, generation)
    if cover.lost:
        listed = ", ".join(f"{namespace} (RuntimeProfile {winner})" for namespace, winner in sorted(cover.lost.items()))
        message = (
            f"{len(cover.lost)} selected namespaces are covered by older profiles and left to them: {listed}; "
            f"{len(cover.covered)} namespaces covered"
        )
        return _condition("NamespaceDefault", False, "NamespaceConflict", message, generation)
    enforced = profile.spec.namespace_default is not None and profile.spec.namespace_default.enforce
    message = f"new pods in {len(cover.covered)} namespaces get RuntimeClass {class_name} when they name none" + (
        ", and may name no other" if enforced else ""
    )
    return _condition("NamespaceDefault", True, "NamespacesCovered", message, generation)


def compute(
    snapshot: Snapshot,
    placement: Placement,
    node_states: rollout.States,
    profile: RuntimeProfile,
    runtime_class: Outcome,
    now: datetime.datetime,
    namespaces: tuple[Coverage | None, bool] = (None, False),
) -> RuntimeProfileStatus:
    """``namespaces``: with a namespace default, the profile's coverage (None if it is not in force) and
    whether its admission objects are in place."""
    generation = profile.generation
    counts, failures = _nodes(snapshot, placement, node_states, profile)
    if profile.name in placement.conflicts:
        nodes_ready, nodes_reason, nodes_message = False, "HandlerConflict", runtime_class.message
    elif counts.desired == 0:
        nodes_ready, nodes_reason, nodes_message = False, "NoMatchingNodes", "no node matches spec.nodeSelector"
    elif counts.ready == counts.desired:
        nodes_ready, nodes_reason = True, "AllNodesReady"
        nodes_message = f"the handler is ready on all {counts.desired} nodes"
    else:
        nodes_ready, nodes_reason = False, "NodesFailed" if counts.failed else "RolloutInProgress"
        nodes_message = (
            f"{counts.ready} of {counts.desired} nodes ready, {counts.updating} updating, {counts.failed} failed"
        )
    if failures:
        listed = ", ".join(f"{failure.node} ({failure.reason})" for failure in failures)
        message = f"the handler fails on {counts.failed} nodes: {listed}"
        degraded = _condition("Degraded", True, "HandlerNotReady", message, generation)
    else:
        degraded = _condition("Degraded", False, "AsExpected", "", generation)
    # A clash blocks the profile whatever the nodes do; a RuntimeClass being written is the last thing missing.
    blocked = not runtime_class.ready and runtime_class.reason != "RuntimeClassSyncing"
    if blocked or (nodes_ready and not runtime_class.ready):
        ready = _condition("Ready", False, runtime_class.reason, runtime_class.message, generation)
    elif not nodes_ready:
        ready = _condition("Ready", False, nodes_reason, nodes_message, generation)
    else:
        message = f"RuntimeClass {profile.runtime_class_name} schedules pods on {counts.ready} ready nodes"
        ready = _condition("Ready", True, "Ready", message, generation)
    conditions = [
        ready,
        _condition("RuntimeClassReady", runtime_class.ready, runtime_class.reason, runtime_class.message, generation),
        _condition("NodesReady", nodes_ready, nodes_reason, nodes_message, generation),
        degraded,
    ]
    cover, in_place = namespaces
    if profile.spec.namespace_default is not None:
        conditions.append(_namespace_default(profile, cover, in_place, runtime_class))
    return RuntimeProfileStatus(
        observed_generation=generation,
        runtime_class_name=profile.runtime_class_name,
        ready=f"{counts.ready}/{counts.desired}",
        conditions=_stamp(conditions, profile.status, now),
        nodes=counts,
        failures=failures,
        namespaces=None if profile.spec.namespace_default is None else (cover or Coverage((), {})).status(),
    )


def _condition_of(status: RuntimeProfileStatus | None, kind: str) -> Condition | None:
    return next((condition for condition in (status.conditions if status else []) if condition.type == kind), None)


def _event(
    profile: RuntimeProfile, before: Condition | None, after: Condition | None, became_true: str
) -> RecordEvent | None:
    """An event when a condition turns True (reason ``became_true``), or False for a reason an admin must act
    on."""
    if after is None:
        return None
    if before is not None and (before.status, before.reason) == (after.status, after.reason):
        return None
    if after.status is ConditionStatus.TRUE:
        return RecordEvent(profile, "Normal", became_true, after.message)
    if after.reason in WARN_REASONS:
        return RecordEvent(profile, "Warning", after.reason, after.message)
    return None


def progress_only(before: RuntimeProfileStatus | None, after: RuntimeProfileStatus) -> bool:
    """Whether ``after`` differs from ``before`` only in rollout counts (the conditions, failures and the rest
    as they were): news the controller may hold back for a while, unlike a condition turning."""

    def essence(status: RuntimeProfileStatus) -> RuntimeProfileStatus:
        conditions = [condition.model_copy(update={"message": ""}) for condition in status.conditions]
        return status.model_copy(update={"ready": None, "nodes": None, "conditions": conditions})

    return before is not None and essence(before) == essence(after)


def plan(
    snapshot: Snapshot,
    placement: Placement,
    node_states: rollout.States,
    outcomes: dict[str, Outcome],
    now: datetime.datetime,
    covers: Mapping[str, Coverage],
    policies_in_place: set[str],
) -> tuple[list[Action], dict[str, RuntimeProfileStatus]]:
    actions: list[Action] = []
    statuses: dict[str, RuntimeProfileStatus] = {}
    for name, profile in snapshot.profiles.items():
        if profile.deleting:
            continue
        namespaces = (covers.get(name), name in policies_in_place)
        status = compute(snapshot, placement, node_states, profile, outcomes[name], now, namespaces)
        statuses[name] = status
        if status != profile.status:
            actions.append(SetProfileStatus(profile=name, status=status))
        for kind, became_true in (("Ready", "Ready"), ("NamespaceDefault", "NamespacesCovered")):
            event = _event(profile, _condition_of(profile.status, kind), _condition_of(status, kind), became_true)
            if event is not None:
                actions.append(event)
    return actions, statuses
