"""The values reconciliation works on: what the operator sees (``Snapshot``) and what it decides (actions)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any

from kubehull_api.common import API_VERSION
from kubehull_api.nodehandler import FINALIZER, HandlerConfig, NodeHandlerStatus
from kubehull_api.runtimeprofile import KIND, RuntimeProfile, RuntimeProfileStatus

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubehull"
PROFILE_LABEL = "kubehull.io/profile"
HANDLER_LABEL_PREFIX = "handler.kubehull.io/"


def owned_metadata(profile: RuntimeProfile, name: str) -> dict[str, Any]:
    """The metadata of an object a profile owns (its RuntimeClass, its admission policies): kubehull's labels
    and the profile as controller owner."""
    return {
        "name": name,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, PROFILE_LABEL: profile.name},
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": profile.name,
                "uid": profile.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def handler_label(handler: str) -> str:
    """The node label that says ``handler`` works on the node; RuntimeClasses select nodes by it."""
    return f"{HANDLER_LABEL_PREFIX}{handler}"


@dataclasses.dataclass(frozen=True)
class NodeRecord:
    name: str
    uid: str
    resource_version: str
    labels: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class RuntimeClassRecord:
    name: str
    resource_version: str
    body: Mapping[str, Any]
    """handler, overhead, scheduling, metadata.labels and metadata.ownerReferences: what kubehull manages."""

    @property
    def controller_uid(self) -> str | None:
        for reference in self.body.get("metadata", {}).get("ownerReferences", []):
            if reference.get("controller"):
                return str(reference.get("uid"))
        return None

    @property
    def managed(self) -> bool:
        return bool(self.body.get("metadata", {}).get("labels", {}).get(MANAGED_BY_LABEL) == MANAGED_BY)


@dataclasses.dataclass(frozen=True)
class NamespaceRecord:
    name: str
    resource_version: str
    labels: Mapping[str, str]


ADMISSION_KINDS = {
    "MutatingAdmissionPolicy": "mutatingadmissionpolicies",
    "MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}
"""The admission objects a profile's namespace default is made of (admissionregistration.k8s.io/v1), by kind:
their resource names."""


@dataclasses.dataclass(frozen=True)
class AdmissionRecord:
    """One of kubehull's admission objects (only those labelled managed-by kubehull are watched)."""

    kind: str
    name: str
    resource_version: str
    body: Mapping[str, Any]
    """spec, metadata.labels and metadata.ownerReferences."""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class NodeHandlerRecord:
    """A NodeHandler as the planner needs it. Records are many (nodes times handlers) and share what they can: the
    parsed handler configuration and the agent's report are one object per distinct value, not per node."""

    name: str
    node: str
    resource_version: str
    handler: HandlerConfig
    report: NodeHandlerStatus | None
    """The agent's last status, whatever configuration it is about."""
    deleting: bool
    finalized: bool
    """Whether the agent's finalizer is still on it (the handler may still be on the node)."""

    @property
    def handler_status(self) -> NodeHandlerStatus | None:
        """The agent's report, only if it is about the configuration in the spec (matched by digest: a report
        on the previous configuration is never taken for one on the new)."""
        report = self.report
        return report if report is not None and report.config_digest == self.handler.runtime_digest() else None


class NodeHandlers:
    """One node's NodeHandlers, by handler name: the handlers the operator has asked the node to run."""

    def __init__(self, records: list[NodeHandlerRecord]) -> None:
        self._live = {record.handler.name: record for record in records if not record.deleting}
        self._leaving = {record.handler.name for record in records if record.deleting}

    def record(self, handler: str) -> NodeHandlerRecord | None:
        return self._live.get(handler)

    def records(self) -> list[NodeHandlerRecord]:
        return list(self._live.values())

    def handler(self, name: str) -> HandlerConfig | None:
        record = self._live.get(name)
        return None if record is None else record.handler

    def handler_status(self, name: str) -> NodeHandlerStatus | None:
        record = self._live.get(name)
        return None if record is None else record.handler_status

    def leaving(self, name: str) -> bool:
        """Whether the handler's NodeHandler is being deleted (a new one waits until the agent let it go)."""
        return name in self._leaving


NO_HANDLERS = NodeHandlers([])


@dataclasses.dataclass(frozen=True)
class Snapshot:
    profiles: Mapping[str, RuntimeProfile]
    nodes: Mapping[str, NodeRecord]
    node_handlers: Mapping[str, NodeHandlerRecord]
    """By object name."""
    runtime_classes: Mapping[str, RuntimeClassRecord]
    namespaces: Mapping[str, NamespaceRecord] = dataclasses.field(default_factory=dict)
    admission: Mapping[str, AdmissionRecord] = dataclasses.field(default_factory=dict)
    """kubehull's admission objects, by ``Kind/name``."""
    own_namespace: str = ""
    """kubehull's namespace: never given a namespace default."""

    def handlers_on(self, node: str) -> NodeHandlers:
        return self._by_node.get(node, NO_HANDLERS)

    @functools.cached_property
    def _by_node(self) -> dict[str, NodeHandlers]:
        # Once per snapshot: the planner asks for every node's handlers several times a pass.
        grouped: dict[str, list[NodeHandlerRecord]] = {}
        for record in self.node_handlers.values():
            grouped.setdefault(record.node, []).append(record)
        return {node: NodeHandlers(records) for node, records in grouped.items()}


# --- reading objects -----------------------------------------------------------------------------------------

RUNTIME_CLASS_FIELDS = ("handler", "overhead", "scheduling")


def node_record(body: Mapping[str, Any]) -> NodeRecord:
    metadata = body["metadata"]
    return NodeRecord(
        name=metadata["name"],
        uid=metadata.get("uid", ""),
        resource_version=metadata.get("resourceVersion", ""),
        labels=dict(metadata.get("labels") or {}),
    )


def runtime_class_record(body: Mapping[str, Any]) -> RuntimeClassRecord:
    metadata = body["metadata"]
    kept = {key: body[key] for key in RUNTIME_CLASS_FIELDS if body.get(key) is not None}
    kept["metadata"] = {
        "labels": dict(metadata.get("labels") or {}),
        "ownerReferences": [dict(reference) for reference in metadata.get("ownerReferences") or []],
    }
    return RuntimeClassRecord(name=metadata["name"], resource_version=metadata.get("resourceVersion", ""), body=kept)


def namespace_record(body: Mapping[str, Any]) -> NamespaceRecord:
    metadata = body["metadata"]
    return NamespaceRecord(
        name=metadata["name"],
        resource_version=metadata.get("resourceVersion", ""),
        labels=dict(metadata.get("labels") or {}),
    )


def admission_record(body: Mapping[str, Any]) -> AdmissionRecord:
    metadata = body["metadata"]
    kept = {
        "spec": body.get("spec") or {},
        "metadata": {
            "labels": dict(metadata.get("labels") or {}),
            "ownerReferences": [dict(reference) for reference in metadata.get("ownerReferences") or []],
        },
    }
    return AdmissionRecord(
        kind=str(body["kind"]), name=metadata["name"], resource_version=metadata.get("resourceVersion", ""), body=kept
    )


def profile_record(body: Mapping[str, Any]) -> RuntimeProfile:
    return RuntimeProfile.model_validate(dict(body))


def node_handler_record(body: Mapping[str, Any]) -> NodeHandlerRecord:
    """The record of a NodeHandler (ValueError: it does not parse). The handler configuration and the report are
    shared with every record carrying the same (one profile's handler on 5000 nodes is one parsed object, whose
    digest is computed once)."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    if not isinstance(spec.get("nodeName"), str) or not isinstance(spec.get("handler"), dict):
        raise ValueError("spec.nodeName and spec.handler are required")
    status = body.get("status")
    return NodeHandlerRecord(
        name=str(metadata["name"]),
        node=spec["nodeName"],
        resource_version=str(metadata.get("resourceVersion", "")),
        handler=_handler_config(json.dumps(spec["handler"], sort_keys=True)),
        report=_report(json.dumps(status, sort_keys=True)) if status else None,
        deleting=metadata.get("deletionTimestamp") is not None,
        finalized=FINALIZER in (metadata.get("finalizers") or ()),
    )


@functools.lru_cache(maxsize=4096)
def _handler_config(entry: str) -> HandlerConfig:
    return HandlerConfig.model_validate_json(entry)


@functools.lru_cache(maxsize=4096)
def _report(status: str) -> NodeHandlerStatus:
    return NodeHandlerStatus.model_validate_json(status)


# --- actions --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CreateNodeHandler:
    node: NodeRecord
    handler: HandlerConfig


@dataclasses.dataclass(frozen=True)
class SetNodeHandler:
    name: str
    handler: HandlerConfig


@dataclasses.dataclass(frozen=True)
class DeleteNodeHandler:
    name: str
    node_gone: bool = False
    """The node no longer exists, nor its agent: the operator takes the agent's finalizer off itself."""


@dataclasses.dataclass(frozen=True)
class SetNodeLabels:
    node: str
    labels: Mapping[str, str | None]
    """Labels to set; None removes one."""


@dataclasses.dataclass(frozen=True)
class ApplyRuntimeClass:
    body: Mapping[str, Any]
    resource_version: str | None
    """None: create; otherwise replace that version."""


@dataclasses.dataclass(frozen=True)
class DeleteRuntimeClass:
    name: str


@dataclasses.dataclass(frozen=True)
class ApplyAdmission:
    body: Mapping[str, Any]
    """A whole admission object (apiVersion, kind, metadata, spec)."""
    resource_version: str | None
    """None: create; otherwise replace that version."""


@dataclasses.dataclass(frozen=True)
class DeleteAdmission:
    kind: str
    name: str


@dataclasses.dataclass(frozen=True)
class SetProfileStatus:
    profile: str
    status: RuntimeProfileStatus


@dataclasses.dataclass(frozen=True)
class RecordEvent:
    profile: RuntimeProfile
    type: str
    """Normal or Warning."""
    reason: str
    message: str


Action = (
    CreateNodeHandler
    | SetNodeHandler
    | DeleteNodeHandler
    | SetNodeLabels
    | ApplyRuntimeClass
    | DeleteRuntimeClass
    | ApplyAdmission
    | DeleteAdmission
    | SetProfileStatus
    | RecordEvent
)
