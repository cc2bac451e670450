"""The operator's view of the cluster: one kopf index per watched kind, each keyed by object name.

kopf lists and watches the four kinds, keeps the indices current, and calls handlers only once all four are
fully listed. ``changed`` then hands the indices to the controller and nudges it on every event, deletions
included.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubehull_api.common import GROUP, VERSION
from kubehull_api.noderuntime import PLURAL as NODE_RUNTIMES
from kubehull_api.noderuntime import NodeRuntime
from kubehull_api.runtimeprofile import PLURAL as RUNTIME_PROFILES
from kubehull_api.runtimeprofile import RuntimeProfile
from kubehull_operator.controller import Controller, Indices
from kubehull_operator.reconcile.model import (
    NodeRecord,
    RuntimeClassRecord,
    node_record,
    node_runtime_record,
    profile_record,
    runtime_class_record,
)

PROFILES = (GROUP, VERSION, RUNTIME_PROFILES)
NODE_RUNTIMES_RESOURCE = (GROUP, VERSION, NODE_RUNTIMES)
NODES = ("", "v1", "nodes")
RUNTIME_CLASSES = ("node.k8s.io", "v1", "runtimeclasses")


@kopf.index(*PROFILES)
def profile_index(name: str, body: kopf.Body, **_: Any) -> dict[str, RuntimeProfile]:
    return {name: profile_record(body)}


@kopf.index(*NODES)
def node_index(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeRecord]:
    return {name: node_record(body)}


@kopf.index(*NODE_RUNTIMES_RESOURCE)
def node_runtime_index(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeRuntime]:
    return {name: node_runtime_record(body)}


@kopf.index(*RUNTIME_CLASSES)
def runtime_class_index(name: str, body: kopf.Body, **_: Any) -> dict[str, RuntimeClassRecord]:
    return {name: runtime_class_record(body)}


def attach(memo: kopf.Memo, handler_kwargs: dict[str, Any]) -> Controller:
    """Give the controller the indices (kopf passes them to every handler as keyword arguments)."""
    controller: Controller = memo["controller"]
    controller.attach(
        Indices(
            profiles=handler_kwargs["profile_index"],
            nodes=handler_kwargs["node_index"],
            node_runtimes=handler_kwargs["node_runtime_index"],
            runtime_classes=handler_kwargs["runtime_class_index"],
        )
    )
    return controller


@kopf.on.event(*PROFILES)
@kopf.on.event(*NODES)
@kopf.on.event(*NODE_RUNTIMES_RESOURCE)
@kopf.on.event(*RUNTIME_CLASSES)
def changed(memo: kopf.Memo, **kwargs: Any) -> None:
    attach(memo, kwargs).nudge()
