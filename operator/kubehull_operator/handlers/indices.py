"""The operator's view of the cluster's few: kopf indices (the many, Nodes and NodeRuntimes, the controller lists
and watches itself: ``mirror`` says why).

kopf lists and watches profiles, RuntimeClasses, namespaces and kubehull's own admission policies and bindings,
indexes them (one index per kind, keyed by object name) and calls handlers only once all are fully listed;
``changed`` then hands the indices to the controller and nudges it on every event, deletions included. The
handlers are coroutines: kopf would run plain functions in a thread pool, a hand-off per watch event.
"""

from __future__ import annotations

import contextlib
from typing import Any

import kopf

from kubehull_api.common import GROUP, VERSION
from kubehull_api.runtimeprofile import PLURAL as RUNTIME_PROFILES
from kubehull_api.runtimeprofile import RuntimeProfile
from kubehull_operator.controller import Controller, Indices, Store
from kubehull_operator.kube import ADMISSION_GROUP, ADMISSION_VERSION
from kubehull_operator.reconcile.model import (
    ADMISSION_KINDS,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    AdmissionRecord,
    NamespaceRecord,
    RuntimeClassRecord,
    admission_record,
    namespace_record,
    profile_record,
    runtime_class_record,
)

PROFILES = (GROUP, VERSION, RUNTIME_PROFILES)
RUNTIME_CLASSES = ("node.k8s.io", "v1", "runtimeclasses")
NAMESPACES = ("", "v1", "namespaces")
MUTATING_POLICIES = (ADMISSION_GROUP, ADMISSION_VERSION, ADMISSION_KINDS["MutatingAdmissionPolicy"])
MUTATING_BINDINGS = (ADMISSION_GROUP, ADMISSION_VERSION, ADMISSION_KINDS["MutatingAdmissionPolicyBinding"])
VALIDATING_POLICIES = (ADMISSION_GROUP, ADMISSION_VERSION, ADMISSION_KINDS["ValidatingAdmissionPolicy"])
VALIDATING_BINDINGS = (ADMISSION_GROUP, ADMISSION_VERSION, ADMISSION_KINDS["ValidatingAdmissionPolicyBinding"])
MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}


class Merged:
    """Several indices read as one (their keys never collide)."""

    def __init__(self, stores: tuple[Store, ...]) -> None:
        self._stores = stores

    def __getitem__(self, key: str) -> Any:
        for store in self._stores:
            with contextlib.suppress(KeyError):
                return store[key]
        raise KeyError(key)

    def items(self) -> Any:
        return [item for store in self._stores for item in store.items()]


@kopf.index(*PROFILES)
async def profile_index(name: str, body: kopf.Body, **_: Any) -> dict[str, RuntimeProfile]:
    return {name: profile_record(body)}


@kopf.index(*RUNTIME_CLASSES)
async def runtime_class_index(name: str, body: kopf.Body, **_: Any) -> dict[str, RuntimeClassRecord]:
    return {name: runtime_class_record(body)}


@kopf.index(*NAMESPACES)
async def namespace_index(name: str, body: kopf.Body, **_: Any) -> dict[str, NamespaceRecord]:
    return {name: namespace_record(body)}


def _admission(body: kopf.Body) -> dict[str, AdmissionRecord]:
    record = admission_record(body)
    return {record.key: record}


# Only kubehull's own admission objects: the admin's are none of the operator's business.
@kopf.index(*MUTATING_POLICIES, labels=MANAGED)
async def mutating_policy_index(body: kopf.Body, **_: Any) -> dict[str, AdmissionRecord]:
    return _admission(body)


@kopf.index(*MUTATING_BINDINGS, labels=MANAGED)
async def mutating_binding_index(body: kopf.Body, **_: Any) -> dict[str, AdmissionRecord]:
    return _admission(body)


@kopf.index(*VALIDATING_POLICIES, labels=MANAGED)
async def validating_policy_index(body: kopf.Body, **_: Any) -> dict[str, AdmissionRecord]:
    return _admission(body)


@kopf.index(*VALIDATING_BINDINGS, labels=MANAGED)
async def validating_binding_index(body: kopf.Body, **_: Any) -> dict[str, AdmissionRecord]:
    return _admission(body)


ADMISSION_INDICES = (
    "mutating_policy_index",
    "mutating_binding_index",
    "validating_policy_index",
    "validating_binding_index",
)


def attach(memo: kopf.Memo, handler_kwargs: dict[str, Any]) -> Controller:
    """Give the controller the indices (kopf passes them to every handler as keyword arguments)."""
    controller: Controller = memo["controller"]
    controller.attach(
        Indices(
            profiles=handler_kwargs["profile_index"],
            runtime_classes=handler_kwargs["runtime_class_index"],
            namespaces=handler_kwargs["namespace_index"],
            admission=Merged(tuple(handler_kwargs[name] for name in ADMISSION_INDICES)),
        )
    )
    return controller


@kopf.on.event(*PROFILES)
@kopf.on.event(*RUNTIME_CLASSES)
@kopf.on.event(*NAMESPACES)
@kopf.on.event(*MUTATING_POLICIES, labels=MANAGED)
@kopf.on.event(*MUTATING_BINDINGS, labels=MANAGED)
@kopf.on.event(*VALIDATING_POLICIES, labels=MANAGED)
@kopf.on.event(*VALIDATING_BINDINGS, labels=MANAGED)
async def changed(memo: kopf.Memo, **kwargs: Any) -> None:
    attach(memo, kwargs).nudge()
