"""The RuntimeClass of each profile: what it should be, and whether the one in the cluster is kubehull's.

A profile owns its RuntimeClass (controller owner reference, managed-by label). An edited or deleted one is
restored; one that kubehull does not own is never touched, and the profile reports the clash instead.
RuntimeClasses whose owner profile is gone are deleted (the finalizer path, and a safety net where the
garbage collector does not run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from kubehull_api.runtimeprofile import RuntimeProfile
from kubehull_operator.reconcile.model import (
    Action,
    ApplyRuntimeClass,
    DeleteRuntimeClass,
    RecordEvent,
    RuntimeClassRecord,
    Snapshot,
    handler_label,
    owned_metadata,
)
from kubehull_operator.reconcile.placement import Placement


@dataclasses.dataclass(frozen=True)
class Outcome:
    ready: bool
    reason: str
    message: str


def desired(profile: RuntimeProfile) -> dict[str, Any]:
    scheduling: dict[str, Any] = {"nodeSelector": {handler_label(profile.spec.handler): "true"}}
    if profile.spec.tolerations:
        scheduling["tolerations"] = [
            toleration.model_dump(by_alias=True, exclude_none=True, mode="json")
            for toleration in profile.spec.tolerations
        ]
    body: dict[str, Any] = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": owned_metadata(profile, profile.runtime_class_name),
        "handler": profile.spec.handler,
        "scheduling": scheduling,
    }
    overhead = profile.spec.resolved_overhead()
    if overhead:
        body["overhead"] = {"podFixed": overhead}
    return body


def _quantities(resources: Mapping[str, Any]) -> dict[str, Decimal]:
    # The API server rewrites quantities in canonical form ("0.5" becomes "500m"): compare values, not text.
    return {name: parse_quantity(value) for name, value in resources.items()}


def matches(actual: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the RuntimeClass ``actual`` carries everything of ``wanted`` that kubehull manages."""
    actual_meta, wanted_meta = actual.get("metadata", {}), wanted["metadata"]
    labels = actual_meta.get("labels") or {}
    return (
        actual.get("handler") == wanted["handler"]
        and all(labels.get(key) == value for key, value in wanted_meta["labels"].items())
        and (actual_meta.get("ownerReferences") or []) == wanted_meta["ownerReferences"]
        and (actual.get("scheduling") or {}) == wanted["scheduling"]
        and _quantities((actual.get("overhead") or {}).get("podFixed") or {})
        == _quantities(wanted.get("overhead", {}).get("podFixed", {}))
    )


def plan(snapshot: Snapshot, placement: Placement) -> tuple[list[Action], dict[str, Outcome]]:
    actions: list[Action] = []
    outcomes: dict[str, Outcome] = {}
    live_uids = {
        profile.uid
        for name, profile in snapshot.profiles.items()
        if name in placement.active or name in placement.conflicts
    }
    claimed: set[str] = set()
    for name, profile in placement.active.items():
        wanted = desired(profile)
        class_name = profile.runtime_class_name
        existing: RuntimeClassRecord | None = snapshot.runtime_classes.get(class_name)
        if existing is None:
            actions.append(ApplyRuntimeClass(body=wanted, resource_version=None))
            outcomes[name] = Outcome(False, "RuntimeClassSyncing", f"creating RuntimeClass {class_name}")
        elif existing.controller_uid == profile.uid or (existing.managed and existing.controller_uid not in live_uids):
            claimed.add(class_name)
            if matches(existing.body, wanted):
                outcomes[name] = Outcome(True, "RuntimeClassSynced", f"RuntimeClass {class_name} is up to date")
            else:
                actions.append(ApplyRuntimeClass(body=wanted, resource_version=existing.resource_version))
                actions.append(
                    RecordEvent(
                        profile,
                        "Warning",
                        "RuntimeClassRestored",
                        f"RuntimeClass {class_name} differed from the profile; restored it",
                    )
                )
                outcomes[name] = Outcome(False, "RuntimeClassSyncing", f"updating RuntimeClass {class_name}")
        else:
            outcomes[name] = Outcome(
                False,
                "RuntimeClassConflict",
                f"RuntimeClass {class_name} already exists and is not managed by this profile; kubehull leaves "
                "it alone: delete it, or set spec.runtimeClassName to another name in a new profile",
            )
    for name, message in placement.conflicts.items():
        outcomes[name] = Outcome(False, "HandlerConflict", message)
    for class_name, record in snapshot.runtime_classes.items():
        if record.managed and class_name not in claimed and record.controller_uid not in live_uids:
            actions.append(DeleteRuntimeClass(name=class_name))
    return actions, outcomes
