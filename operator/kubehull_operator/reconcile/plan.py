"""The operator's whole decision: from one snapshot to the list of actions, in the order they should run.

RuntimeClasses come first (a new profile's RuntimeClass must not wait for a thousand node writes), then
NodeRuntimes, node labels, the admission policies of namespace defaults, and last the profile statuses and
events that describe it all.
"""

from __future__ import annotations

import dataclasses
import datetime

from kubehull_api.runtimeprofile import RuntimeProfileStatus
from kubehull_operator.reconcile import labels, namespaces, placement, rollout, runtimeclass, status
from kubehull_operator.reconcile.model import (
    PROFILE_LABEL,
    Action,
    ApplyRuntimeClass,
    CreateNodeRuntime,
    DeleteNodeRuntime,
    SetNodeRuntimeHandlers,
    Snapshot,
    handler_label,
)


@dataclasses.dataclass(frozen=True)
class Plan:
    actions: list[Action]
    statuses: dict[str, RuntimeProfileStatus]
    """Every live profile's status as it should read (written or not)."""


def plan(snapshot: Snapshot, now: datetime.datetime) -> Plan:
    placed = placement.place(snapshot)
    actions, outcomes = runtimeclass.plan(snapshot, placed)
    node_states = rollout.states(snapshot, placed)
    planned = rollout.planned_handlers(snapshot, placed, node_states)
    for name, node in sorted(snapshot.nodes.items()):
        node_runtime = snapshot.node_runtimes.get(name)
        if node_runtime is None:
            actions.append(CreateNodeRuntime(node=node, handlers=planned[name]))
        elif tuple(node_runtime.spec.handlers) != planned[name]:
            actions.append(SetNodeRuntimeHandlers(name=name, handlers=planned[name]))
    actions.extend(
        DeleteNodeRuntime(name=name) for name in sorted(snapshot.node_runtimes) if name not in snapshot.nodes
    )
    actions.extend(labels.plan(snapshot, planned))
    covers = namespaces.coverage(snapshot, placed)
    admission_actions, policies_in_place = namespaces.plan(snapshot, placed, covers)
    actions.extend(admission_actions)
    status_actions, statuses = status.plan(snapshot, placed, node_states, outcomes, now, covers, policies_in_place)
    actions.extend(status_actions)
    return Plan(actions=actions, statuses=statuses)


def new_runtime_classes(snapshot: Snapshot) -> list[Action]:
    """The RuntimeClasses to create for new profiles: ``plan``'s first actions, found without planning the
    nodes."""
    actions, _ = runtimeclass.plan(snapshot, placement.place(snapshot))
    return [action for action in actions if isinstance(action, ApplyRuntimeClass) and action.resource_version is None]


def cleanup_pending(snapshot: Snapshot, profile_name: str) -> list[str]:
    """What still stands of a deleted profile: its RuntimeClass, NodeRuntime entries, node labels."""
    profile = snapshot.profiles[profile_name]
    placed = placement.place(snapshot)
    left = [
        f"RuntimeClass {name}"
        for name, record in snapshot.runtime_classes.items()
        if record.controller_uid == profile.uid
    ]
    handler = profile.spec.handler
    for node, node_runtime in sorted(snapshot.node_runtimes.items()):
        if node in snapshot.nodes and handler in placed.handlers_on(node):
            continue  # another profile keeps this handler here
        entry = node_runtime.handler(handler)
        if entry is not None and entry.profile == profile_name:
            left.append(f"NodeRuntime {node}")
    key = handler_label(handler)
    left.extend(
        f"label {key} on node {name}"
        for name, node in sorted(snapshot.nodes.items())
        if key in node.labels and handler not in placed.handlers_on(name)
    )
    left.extend(
        key
        for key, record in sorted(snapshot.admission.items())
        if record.body.get("metadata", {}).get("labels", {}).get(PROFILE_LABEL) == profile_name
    )
    return left
