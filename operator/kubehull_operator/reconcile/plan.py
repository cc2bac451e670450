"""The operator's whole decision: from one snapshot to the list of actions, in the order they should run.

RuntimeClasses come first (a new profile's RuntimeClass must not wait for a thousand node writes), then
NodeHandlers, node labels, the admission policies of namespace defaults, and last the profile statuses and
events that describe it all.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping

from kubehull_api.nodehandler import HandlerConfig
from kubehull_api.runtimeprofile import RuntimeProfileStatus
from kubehull_operator.reconcile import labels, namespaces, placement, rollout, runtimeclass, status
from kubehull_operator.reconcile.model import (
    PROFILE_LABEL,
    Action,
    ApplyRuntimeClass,
    CreateNodeHandler,
    DeleteNodeHandler,
    SetNodeHandler,
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
    actions.extend(node_handler_actions(snapshot, planned))
    actions.extend(labels.plan(snapshot, planned))
    covers = namespaces.coverage(snapshot, placed)
    admission_actions, policies_in_place = namespaces.plan(snapshot, placed, covers)
    actions.extend(admission_actions)
    status_actions, statuses = status.plan(snapshot, placed, node_states, outcomes, now, covers, policies_in_place)
    actions.extend(status_actions)
    return Plan(actions=actions, statuses=statuses)


def node_handler_actions(snapshot: Snapshot, planned: Mapping[str, tuple[HandlerConfig, ...]]) -> list[Action]:
    """The NodeHandler writes that make every node's handlers what ``planned`` says."""
    actions: list[Action] = []
    for name, node in sorted(snapshot.nodes.items()):
        handlers = snapshot.handlers_on(name)
        wanted = {config.name: config for config in planned[name]}
        for handler, config in wanted.items():
            record = handlers.record(handler)
            if record is None:
                if not handlers.leaving(handler):  # else: once the agent has let the old one go
                    actions.append(CreateNodeHandler(node=node, handler=config))
            elif record.handler != config:
                actions.append(SetNodeHandler(name=record.name, handler=config))
        actions.extend(
            DeleteNodeHandler(name=record.name) for record in handlers.records() if record.handler.name not in wanted
        )
    actions.extend(
        DeleteNodeHandler(name=name, node_gone=True)
        for name, record in sorted(snapshot.node_handlers.items())
        if record.node not in snapshot.nodes and (record.finalized or not record.deleting)
    )
    return actions


def new_runtime_classes(snapshot: Snapshot) -> list[Action]:
    """The RuntimeClasses to create for new profiles: ``plan``'s first actions, found without planning the
    nodes."""
    actions, _ = runtimeclass.plan(snapshot, placement.place(snapshot))
    return [action for action in actions if isinstance(action, ApplyRuntimeClass) and action.resource_version is None]


def cleanup_pending(snapshot: Snapshot, profile_name: str) -> list[str]:
    """What still stands of a deleted profile: its RuntimeClass, NodeHandlers, node labels."""
    profile = snapshot.profiles[profile_name]
    placed = placement.place(snapshot)
    left = [
        f"RuntimeClass {name}"
        for name, record in snapshot.runtime_classes.items()
        if record.controller_uid == profile.uid
    ]
    handler = profile.spec.handler
    for name, record in sorted(snapshot.node_handlers.items()):
        if record.deleting or record.handler.name != handler or record.handler.profile != profile_name:
            continue
        if record.node not in snapshot.nodes or handler not in placed.handlers_on(record.node):
            left.append(f"NodeHandler {name}")  # else another profile keeps this handler there
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
