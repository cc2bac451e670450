"""The values reconciliation works on: what the operator sees (``Snapshot``) and what it decides (actions)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any

from kubehull_api.common import API_VERSION
from kubehull_api.noderuntime import HandlerConfig, NodeRuntime
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


@dataclasses.dataclass(frozen=True)
class Snapshot:
    profiles: Mapping[str, RuntimeProfile]
    nodes: Mapping[str, NodeRecord]
    node_runtimes: Mapping[str, NodeRuntime]
    runtime_classes: Mapping[str, RuntimeClassRecord]
    namespaces: Mapping[str, NamespaceRecord] = dataclasses.field(default_factory=dict)
    admission: Mapping[str, AdmissionRecord] = dataclasses.field(default_factory=dict)
    """kubehull's admission objects, by ``Kind/name``."""
    own_namespace: str = ""
    """kubehull's namespace: never given a namespace default."""


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


NODE_RUNTIME_METADATA = ("name", "uid", "resourceVersion", "generation")


def node_runtime_record(body: Mapping[str, Any]) -> NodeRuntime:
    """The NodeRuntime as the planner needs it: metadata cut to what it reads (managedFields alone would be most
    of the record), and every handler entry shared with the nodes that carry the same one, so 5000 nodes with one
    profile's handler hold one parsed HandlerConfig (and compute its digest once), not 5000."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    handlers = [_handler_config(json.dumps(entry, sort_keys=True)) for entry in spec.get("handlers") or []]
    return NodeRuntime.model_validate(
        {
            "metadata": {key: metadata[key] for key in NODE_RUNTIME_METADATA if key in metadata},
            "spec": {**spec, "handlers": handlers},
            "status": body.get("status"),
        }
    )


@functools.lru_cache(maxsize=4096)
def _handler_config(entry: str) -> HandlerConfig:
    return HandlerConfig.model_validate_json(entry)


# --- actions --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CreateNodeRuntime:
    node: NodeRecord
    handlers: tuple[HandlerConfig, ...]


@dataclasses.dataclass(frozen=True)
class SetNodeRuntimeHandlers:
    name: str
    handlers: tuple[HandlerConfig, ...]


@dataclasses.dataclass(frozen=True)
class DeleteNodeRuntime:
    name: str


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
    CreateNodeRuntime
    | SetNodeRuntimeHandlers
    | DeleteNodeRuntime
    | SetNodeLabels
    | ApplyRuntimeClass
    | DeleteRuntimeClass
    | ApplyAdmission
    | DeleteAdmission
    | SetProfileStatus
    | RecordEvent
)
