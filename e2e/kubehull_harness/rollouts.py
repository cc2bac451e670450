"""How many nodes a rollout holds unavailable, read from NodeHandler objects as the operator's budget counts them."""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from kubehull_api.nodehandler import HandlerConfig


def unavailable(nodehandlers: Iterable[dict[str, Any]], handler: str, nodes: Container[str]) -> int:
    """Nodes among ``nodes`` whose NodeHandler for ``handler`` (not being deleted) has no ready report from the
    node's agent on the configuration its spec holds now — a report whose configDigest is not the spec's is about
    an older configuration: the node is being configured, or failing."""
    count = 0
    for item in nodehandlers:
        spec = item["spec"]
        if spec["nodeName"] not in nodes or spec["handler"]["name"] != handler:
            continue
        if item["metadata"].get("deletionTimestamp"):
            continue  # leaving the node: a removal is never held back, nor counted
        status = item.get("status") or {}
        digest = HandlerConfig.model_validate(spec["handler"]).runtime_digest()
        if not (status.get("ready") and status.get("configDigest") == digest):
            count += 1
    return count
