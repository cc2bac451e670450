"""Which handler configuration each node's NodeRuntime should carry now, honouring ``rollout.maxUnavailable``.

For one profile, every selected node is in one of four states:

    pending  ──(its turn: pushed to the NodeRuntime)──▶  updating  ──(agent reports ready)──▶  ready
                                                            └──────(agent reports not ready)──▶  failed

A node is updating from the moment the new configuration is in its NodeRuntime until the agent reports on that
configuration (a handler status whose configDigest is the configuration's). Updating and failed nodes are
unavailable; a pending node gets its turn only while fewer than maxUnavailable nodes are unavailable, so a
configuration that fails stops spreading. Pending nodes keep the configuration they had. Removing a handler
(the node is no longer selected, the profile is gone) is never held back.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from kubehull_api.noderuntime import HandlerConfig, NodeRuntime
from kubehull_operator.reconcile.model import Snapshot
from kubehull_operator.reconcile.placement import Placement


class NodeState(enum.StrEnum):
    PENDING = "pending"
    UPDATING = "updating"
    READY = "ready"
    FAILED = "failed"


def node_state(node_runtime: NodeRuntime | None, config: HandlerConfig) -> NodeState:
    current = node_runtime.handler(config.name) if node_runtime else None
    if node_runtime is None or current is None or not current.same_runtime(config):
        return NodeState.PENDING
    status = node_runtime.handler_status(config.name)
    if status is None:
        return NodeState.UPDATING
    return NodeState.READY if status.ready else NodeState.FAILED


States = Mapping[str, Mapping[str, NodeState]]
"""Active profile name → the state of every node it selects, by node name."""


def states(snapshot: Snapshot, placement: Placement) -> States:
    """Computed once per pass: both the rollout and the profiles' statuses count them."""
    return {
        profile: {node: node_state(snapshot.node_runtimes.get(node), config) for node in placement.selected[profile]}
        for profile, config in placement.configs.items()
    }


def admitted(placement: Placement, node_states_by_profile: States) -> set[tuple[str, str]]:
    """(handler, node) pairs whose desired configuration may be written now."""
    allowed: set[tuple[str, str]] = set()
    for name, profile in placement.active.items():
        node_states = node_states_by_profile[name]
        unavailable = sum(state in (NodeState.UPDATING, NodeState.FAILED) for state in node_states.values())
        budget = profile.spec.rollout.budget(len(node_states)) - unavailable
        for node in sorted(node_states):
            if budget <= 0:
                break
            if node_states[node] is NodeState.PENDING:
                allowed.add((profile.spec.handler, node))
                budget -= 1
    return allowed


def planned_handlers(
    snapshot: Snapshot, placement: Placement, node_states: States
) -> Mapping[str, tuple[HandlerConfig, ...]]:
    """Node name → the handler list its NodeRuntime should carry after this round."""
    allowed = admitted(placement, node_states)
    planned: dict[str, tuple[HandlerConfig, ...]] = {}
    for node in snapshot.nodes:
        node_runtime = snapshot.node_runtimes.get(node)
        entries = []
        for handler, config in sorted(placement.handlers_on(node).items()):
            current = node_runtime.handler(handler) if node_runtime else None
            if current is not None and current.same_runtime(config):
                # Already running this configuration. Keep the entry as it is unless the profile it names is
                # gone; then credit the one in force (no runtime change, so no turn to wait for).
                entries.append(current if current.profile in placement.active else config)
            elif (handler, node) in allowed:
                entries.append(config)
            elif current is not None:
                entries.append(current)  # the old configuration until this node's turn
        planned[node] = tuple(entries)
    return planned
