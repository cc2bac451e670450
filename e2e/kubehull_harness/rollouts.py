"""How many nodes a rollout holds unavailable, read from NodeRuntime objects as the operator's budget counts them."""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any


def unavailable(noderuntimes: Iterable[dict[str, Any]], handler: str, nodes: Container[str]) -> int:
    """Nodes among ``nodes`` whose NodeRuntime asks for ``handler`` but whose agent has not reported it ready for
    the NodeRuntime's current generation (a node being configured or failing)."""
    count = 0
    for item in noderuntimes:
        if item["metadata"]["name"] not in nodes:
            continue
        wanted = {entry["name"] for entry in item["spec"].get("handlers", [])}
        status = item.get("status") or {}
        current = status.get("observedGeneration") == item["metadata"]["generation"]
        ready = {entry["name"] for entry in status.get("handlers", []) if entry["ready"]}
        if handler in wanted and not (current and handler in ready):
            count += 1
    return count
