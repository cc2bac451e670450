"""Node labels ``handler.kubehull.io/<handler>=true``: set where the handler is desired and reported ready.

The label is what RuntimeClasses schedule by, so it must mean "works here": it is removed as soon as the agent
reports the handler not ready or the handler is no longer desired, and left as it is while the agent has not
yet reported on the current spec (so reconfiguring one handler does not unschedule the others).
"""

from __future__ import annotations

from collections.abc import Mapping

from kubehull_api.noderuntime import HandlerConfig
from kubehull_operator.reconcile.model import HANDLER_LABEL_PREFIX, SetNodeLabels, Snapshot, handler_label


def desired_labels(snapshot: Snapshot, node: str, entries: tuple[HandlerConfig, ...]) -> dict[str, str]:
    current = snapshot.nodes[node].labels
    node_runtime = snapshot.node_runtimes.get(node)
    labels: dict[str, str] = {}
    for entry in entries:
        key = handler_label(entry.name)
        applied = node_runtime is not None and node_runtime.handler(entry.name) == entry
        status = node_runtime.handler_status(entry.name) if node_runtime is not None and applied else None
        if status is not None:
            if status.ready:
                labels[key] = "true"
        elif key in current:
            labels[key] = current[key]
    return labels


def plan(snapshot: Snapshot, planned: Mapping[str, tuple[HandlerConfig, ...]]) -> list[SetNodeLabels]:
    actions = []
    for name, node in snapshot.nodes.items():
        current = {key: value for key, value in node.labels.items() if key.startswith(HANDLER_LABEL_PREFIX)}
        wanted = desired_labels(snapshot, name, planned.get(name, ()))
        changes: dict[str, str | None] = {key: value for key, value in wanted.items() if current.get(key) != value}
        changes.update({key: None for key in current if key not in wanted})
        if changes:
            actions.append(SetNodeLabels(node=name, labels=changes))
    return actions
