"""Namespace defaults: which namespaces each profile covers, and the admission policies that make it so.

A profile with ``spec.namespaceDefault`` covers the namespaces its selector picks, but kube-system, kubehull's
own namespace and its exempt list. A namespace two profiles select belongs to the older (by creation time, then
name); the other reports the conflict and leaves it out. Coverage is enforced by the API server itself, with
objects the operator owns (admissionregistration.k8s.io/v1, named ``kubehull-<profile>``):

- a MutatingAdmissionPolicy and its binding: a new pod in a covered namespace that names no RuntimeClass gets
  the profile's;
- with ``enforce``, a ValidatingAdmissionPolicy and its binding: a pod there that names another is refused,
  with a message naming the profile.

The bindings select namespaces by the profile's own selector (so a namespace that gains the label is covered at
once); the policies' match conditions leave out the exempt namespaces and those an older profile won. They exist
only while the profile's RuntimeClass does (a pod given a missing class would be refused). Like RuntimeClasses,
they are restored when edited and deleted with the profile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kubehull_api.runtimeprofile import MAX_LISTED, NamespaceCoverage, NamespaceDefault, RuntimeProfile
from kubehull_operator.reconcile.model import (
    Action,
    AdmissionRecord,
    ApplyAdmission,
    DeleteAdmission,
    Snapshot,
    owned_metadata,
)
from kubehull_operator.reconcile.placement import Placement, by_age

ADMISSION_API = "admissionregistration.k8s.io/v1"
ALWAYS_EXEMPT = ("kube-system",)
"""Besides kubehull's own namespace: system pods keep the node's default runtime."""
MANAGED_METADATA = ("labels", "ownerReferences")
POD_CREATE = {
    "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]
}


@dataclasses.dataclass(frozen=True)
class Coverage:
    covered: tuple[str, ...]
    """The namespaces this profile covers, by name."""
    lost: Mapping[str, str]
    """Selected namespaces an older profile covers: namespace → that profile."""

    def status(self) -> NamespaceCoverage:
        return NamespaceCoverage(
            count=len(self.covered), names=list(self.covered[:MAX_LISTED]), conflicts=sorted(self.lost)[:MAX_LISTED]
        )


def exempt(snapshot: Snapshot, default: NamespaceDefault) -> list[str]:
    names = {*ALWAYS_EXEMPT, *default.exempt_namespaces}
    if snapshot.own_namespace:
        names.add(snapshot.own_namespace)
    return sorted(names)


def coverage(snapshot: Snapshot, placement: Placement) -> dict[str, Coverage]:
    """Every active profile with a namespace default → what it covers. Oldest first claims a namespace."""
    owner: dict[str, str] = {}
    covered: dict[str, list[str]] = {}
    lost: dict[str, dict[str, str]] = {}
    for profile in by_age(placement.active):
        default = profile.spec.namespace_default
        if default is None:
            continue
        excluded = set(exempt(snapshot, default))
        covered[profile.name], lost[profile.name] = [], {}
        for name, namespace in sorted(snapshot.namespaces.items()):
            if name in excluded or not default.namespace_selector.matches(dict(namespace.labels)):
                continue
            if name in owner:
                lost[profile.name][name] = owner[name]
            else:
                owner[name] = profile.name
                covered[profile.name].append(name)
    return {name: Coverage(tuple(covered[name]), lost[name]) for name in covered}


def object_name(profile: RuntimeProfile) -> str:
    name = f"kubehull-{profile.name}"
    if len(name) <= 253:
        return name
    return f"kubehull-{hashlib.sha256(profile.name.encode()).hexdigest()[:32]}"


def desired(
    snapshot: Snapshot, profile: RuntimeProfile, default: NamespaceDefault, cover: Coverage
) -> dict[str, dict[str, Any]]:
    """The profile's admission objects, by ``Kind/name``."""
    name, class_name = object_name(profile), profile.runtime_class_name
    metadata = owned_metadata(profile, name)
    left_out = sorted({*exempt(snapshot, default), *cover.lost})
    in_scope = {"name": "namespace-in-scope", "expression": f"!(request.namespace in {json.dumps(left_out)})"}
    selector = default.namespace_selector.model_dump(by_alias=True, exclude_defaults=True, mode="json")
    objects = {
        "MutatingAdmissionPolicy": {
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "matchConstraints": POD_CREATE,
            "matchConditions": [
                in_scope,
                {
                    "name": "names-no-runtime-class",
                    "expression": "!has(object.spec.runtimeClassName) || object.spec.runtimeClassName == ''",
                },
            ],
            "mutations": [
                {
                    "patchType": "ApplyConfiguration",
                    "applyConfiguration": {
                        "expression": f"Object{{spec: Object.spec{{runtimeClassName: {json.dumps(class_name)}}}}}"
                    },
                }
            ],
        },
        "MutatingAdmissionPolicyBinding": {"policyName": name, "matchResources": {"namespaceSelector": selector}},
    }
    if default.enforce:
        rule = f"spec.runtimeClassName must be {class_name} (or unset)"
        named = "(has(object.spec.runtimeClassName) ? object.spec.runtimeClassName : '')"
        objects["ValidatingAdmissionPolicy"] = {
            "failurePolicy": "Fail",
            "matchConstraints": POD_CREATE,
            "matchConditions": [in_scope],
            "validations": [
                {
                    "expression": f"has(object.spec.runtimeClassName) && "
                    f"object.spec.runtimeClassName == {json.dumps(class_name)}",
                    "message": f"this namespace runs its pods under RuntimeProfile {profile.name}: {rule}",
                    "messageExpression": f"'namespace ' + request.namespace + ' runs its pods under RuntimeProfile "
                    f"{profile.name}: {rule}, not ' + {named}",
                    "reason": "Forbidden",
                }
            ],
        }
        objects["ValidatingAdmissionPolicyBinding"] = {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": selector},
        }
    return {
        f"{kind}/{name}": {"apiVersion": ADMISSION_API, "kind": kind, "metadata": metadata, "spec": spec}
        for kind, spec in objects.items()
    }


def contains(actual: Any, wanted: Any) -> bool:
    """Whether ``actual`` holds everything of ``wanted`` (what the API server added, its defaults, aside)."""
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(contains(actual.get(key), value) for key, value in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(contains(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


def plan(snapshot: Snapshot, placement: Placement, covers: Mapping[str, Coverage]) -> tuple[list[Action], set[str]]:
    """Create, restore and delete admission objects. Also returns the profiles whose objects are all in place."""
    wanted: dict[str, dict[str, Any]] = {}
    owners: dict[str, str] = {}  # Kind/name → profile
    for name in covers:
        profile = placement.active[name]
        default = profile.spec.namespace_default
        runtime_class = snapshot.runtime_classes.get(profile.runtime_class_name)
        if default is not None and runtime_class is not None and runtime_class.controller_uid == profile.uid:
            for key, body in desired(snapshot, profile, default, covers[name]).items():
                wanted[key], owners[key] = body, name
    actions: list[Action] = []
    pending: set[str] = set()
    for key, body in sorted(wanted.items()):
        existing: AdmissionRecord | None = snapshot.admission.get(key)
        managed = {"spec": body["spec"], "metadata": {field: body["metadata"][field] for field in MANAGED_METADATA}}
        if existing is None or not contains(existing.body, managed):
            version = None if existing is None else existing.resource_version
            actions.append(ApplyAdmission(body=body, resource_version=version))
            pending.add(owners[key])
    for key, record in sorted(snapshot.admission.items()):
        if key not in wanted:
            actions.append(DeleteAdmission(kind=record.kind, name=record.name))
    return actions, set(owners.values()) - pending
