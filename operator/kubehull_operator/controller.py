"""The reconciliation loop: snapshot the cluster, plan, apply the actions; again whenever something changes.

kopf's indices (``handlers.indices``) keep the cluster's state in memory; its event handlers call ``nudge()``.
The loop waits for a nudge, lets a burst of events settle for a moment, takes one ``Snapshot`` and hands it to
``reconcile.plan`` — level-triggered, so a missed or repeated event costs nothing. It starts only once kopf has
listed every watched kind (``attach``), so an operator restart never acts on a half-known cluster.

A write's result reaches the indices only when its watch event arrives. Until then the snapshot shows the
written object as the write returned it (an overlay keyed by the version it replaced), so a pass that starts
early does not see an old NodeRuntime and push it again — or count it twice against maxUnavailable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from kubernetes.client.exceptions import ApiException

from kubehull_api.runtimeprofile import RuntimeProfile
from kubehull_operator.kube import Kube
from kubehull_operator.metrics import Metrics
from kubehull_operator.reconcile import plan as planning
from kubehull_operator.reconcile.model import (
    PROFILE_LABEL,
    Action,
    AdmissionRecord,
    ApplyAdmission,
    ApplyRuntimeClass,
    CreateNodeRuntime,
    DeleteAdmission,
    DeleteNodeRuntime,
    DeleteRuntimeClass,
    NodeRecord,
    RecordEvent,
    RuntimeClassRecord,
    SetNodeLabels,
    SetNodeRuntimeHandlers,
    SetProfileStatus,
    Snapshot,
    admission_record,
    node_record,
    node_runtime_record,
    runtime_class_record,
)

logger = logging.getLogger(__name__)

R = TypeVar("R")


class Store(Protocol):
    """One kopf index: object name → a collection holding the record its indexer returned."""

    def __getitem__(self, key: str, /) -> Any: ...
    def items(self) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Indices:
    profiles: Store
    nodes: Store
    node_runtimes: Store
    runtime_classes: Store
    namespaces: Store
    admission: Store
    """kubehull's admission objects, keyed ``Kind/name``."""


def _version(record: Any) -> str:
    if isinstance(record, NodeRecord | RuntimeClassRecord | AdmissionRecord):
        return record.resource_version
    return str(record.metadata.get("resourceVersion", ""))


# Objects the controller writes and reads back through the overlay: kind → (snapshot field, parser of a write's
# response). The overlay key is "<kind>/<name>".
TRACKED: dict[str, tuple[str, Callable[[Mapping[str, Any]], Any]]] = {
    "RuntimeProfile": ("profiles", RuntimeProfile.model_validate),
    "Node": ("nodes", node_record),
    "NodeRuntime": ("node_runtimes", node_runtime_record),
    "RuntimeClass": ("runtime_classes", runtime_class_record),
    "Admission": ("admission", admission_record),
}


URGENT = (ApplyRuntimeClass, DeleteRuntimeClass, ApplyAdmission, DeleteAdmission, SetNodeLabels)


class Overlay:
    """Objects as this operator last wrote them, until the watch catches up. None marks a deletion."""

    def __init__(self) -> None:
        self._written: dict[str, tuple[str | None, Any]] = {}

    def record(self, key: str, replaced_version: str | None, record: Any) -> None:
        self._written[key] = (replaced_version, record)

    def view(self, key: str, indexed: Any) -> Any:
        if key not in self._written:
            return indexed
        replaced, written = self._written[key]
        indexed_version = None if indexed is None else _version(indexed)
        if indexed_version == replaced:
            return written  # the watch has not delivered the write yet
        del self._written[key]
        return indexed


class Controller:
    def __init__(
        self,
        kube: Kube,
        metrics: Metrics,
        *,
        own_namespace: str = "",
        settle: float = 0.05,
        concurrency: int = 16,
        retry_after: float = 2.0,
    ) -> None:
        """``own_namespace``: kubehull's, which namespace defaults never cover."""
        self.kube = kube
        self.own_namespace = own_namespace
        self.metrics = metrics
        self.settle = settle
        self.retry_after = retry_after
        self._limit = asyncio.Semaphore(concurrency)
        self._dirty = asyncio.Event()
        self._indices: Indices | None = None
        self._overlay = Overlay()
        self._task: asyncio.Task[None] | None = None

    # --- fed by kopf -------------------------------------------------------------------------------------------

    def attach(self, indices: Indices) -> None:
        """Called from kopf handlers, which run only once every index is fully listed."""
        if self._indices is None:
            logger.info("all watched kinds listed; reconciliation starts")
        self._indices = indices

    def nudge(self) -> None:
        self._dirty.set()

    # --- the loop ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kubehull reconcile loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.settle)  # let a burst of watch events land first
            self._dirty.clear()
            if self._indices is None:
                continue
            started = time.monotonic()
            try:
                failed = await self.reconcile_once()
            except Exception:
                logger.exception("reconciliation pass failed")
                failed = True
            self.metrics.reconcile_duration.observe(time.monotonic() - started)
            if failed:
                asyncio.get_running_loop().call_later(self.retry_after, self.nudge)

    def snapshot(self) -> Snapshot:
        indices = self._indices
        if indices is None:
            raise RuntimeError("snapshot before kopf listed the cluster")

        def view(kind: str, store: Store) -> dict[str, Any]:
            records = {}
            for name, values in store.items():
                record = self._overlay.view(f"{kind}/{name}", next(iter(values)))
                if record is not None:
                    records[name] = record
            return records

        return Snapshot(
            profiles=view("RuntimeProfile", indices.profiles),
            nodes=view("Node", indices.nodes),
            node_runtimes=view("NodeRuntime", indices.node_runtimes),
            runtime_classes=view("RuntimeClass", indices.runtime_classes),
            namespaces={name: next(iter(values)) for name, values in indices.namespaces.items()},
            admission=view("Admission", indices.admission),
            own_namespace=self.own_namespace,
        )

    async def reconcile_once(self) -> bool:
        """One pass; True if some write failed (the loop then retries shortly)."""
        snapshot = self.snapshot()
        result = planning.plan(snapshot, datetime.datetime.now(datetime.UTC).replace(microsecond=0))
        self.metrics.observe_statuses(result.statuses)
        if not result.actions:
            return False
        logger.info("applying %d actions", len(result.actions))
        # What users wait for first — a new profile's RuntimeClass and admission policies, the label that lets
        # pods onto a node whose agent reported ready — must not wait behind a thousand NodeRuntime writes.
        first = [action for action in result.actions if isinstance(action, URGENT)]
        outcomes = list(await asyncio.gather(*(self._apply(snapshot, action) for action in first)))
        # A status computed while the profile's RuntimeClass was being written says "syncing": once that write
        # went through, it is already out of date. The write's watch event brings the next pass, which writes
        # the status as it then is (one status write fewer per change); a failed write leaves it as it is.
        written = {
            str(action.body["metadata"]["labels"][PROFILE_LABEL])
            for action, done in zip(first, outcomes, strict=True)
            if done and isinstance(action, ApplyRuntimeClass)
        }
        rest = [
            action
            for action in result.actions
            if not isinstance(action, URGENT)
            and not (isinstance(action, SetProfileStatus) and action.profile in written)
        ]
        outcomes += await asyncio.gather(*(self._apply(snapshot, action) for action in rest))
        return not all(outcomes)

    def cleanup_pending(self, profile: str) -> list[str]:
        if self._indices is None:
            return ["the operator has not listed the cluster yet"]
        snapshot = self.snapshot()
        if profile not in snapshot.profiles:
            return []
        return planning.cleanup_pending(snapshot, profile)

    # --- applying one action -----------------------------------------------------------------------------------

    async def _apply(self, snapshot: Snapshot, action: Action) -> bool:
        kind, name, request = self._request(snapshot, action)
        async with self._limit:
            try:
                await asyncio.to_thread(request)
            except ApiException as error:
                # 404 on delete and 409 on create mean the watch is behind: the next pass sees the truth.
                benign = error.status in (404, 409)
                log = logger.info if benign else logger.error
                log("%s %s: %s %s", kind, name, error.status, error.reason)
                self.metrics.reconciles.labels(kind, "conflict" if benign else "error").inc()
                return benign
            except Exception:
                logger.exception("%s %s failed", kind, name)
                self.metrics.reconciles.labels(kind, "error").inc()
                return False
        self.metrics.reconciles.labels(kind, "ok").inc()
        return True

    def _tracked(
        self, snapshot: Snapshot, kind: str, name: str, request: Callable[[], Any], *, deletes: bool = False
    ) -> tuple[str, str, Callable[[], None]]:
        """``request``, then remember its result in the overlay until the watch delivers it."""
        field, parse = TRACKED[kind]
        replaced = getattr(snapshot, field).get(name)
        replaced_version = None if replaced is None else _version(replaced)

        def run() -> None:
            response = request()
            self._overlay.record(f"{kind}/{name}", replaced_version, None if deletes else parse(response))

        return kind, name, run

    def _request(self, snapshot: Snapshot, action: Action) -> tuple[str, str, Callable[[], None]]:
        kube = self.kube
        match action:
            case CreateNodeRuntime(node=node, handlers=handlers):
                return self._tracked(
                    snapshot, "NodeRuntime", node.name, lambda: kube.create_node_runtime(node, handlers)
                )
            case SetNodeRuntimeHandlers(name=name, handlers=handlers):
                return self._tracked(
                    snapshot, "NodeRuntime", name, lambda: kube.set_node_runtime_handlers(name, handlers)
                )
            case DeleteNodeRuntime(name=name):
                return self._tracked(
                    snapshot, "NodeRuntime", name, lambda: kube.delete_node_runtime(name), deletes=True
                )
            case SetNodeLabels(node=name, labels=labels):
                return self._tracked(snapshot, "Node", name, lambda: kube.set_node_labels(name, labels))
            case ApplyRuntimeClass(body=body, resource_version=version):
                return self._tracked(
                    snapshot, "RuntimeClass", body["metadata"]["name"], lambda: kube.apply_runtime_class(body, version)
                )
            case DeleteRuntimeClass(name=name):
                return self._tracked(
                    snapshot, "RuntimeClass", name, lambda: kube.delete_runtime_class(name), deletes=True
                )
            case ApplyAdmission(body=body, resource_version=version):
                key = f"{body['kind']}/{body['metadata']['name']}"
                return self._tracked(snapshot, "Admission", key, lambda: kube.apply_admission(body, version))
            case DeleteAdmission(kind=kind, name=name):
                return self._tracked(
                    snapshot, "Admission", f"{kind}/{name}", lambda: kube.delete_admission(kind, name), deletes=True
                )
            case SetProfileStatus(profile=name, status=status):
                return self._tracked(snapshot, "RuntimeProfile", name, lambda: kube.set_profile_status(name, status))
            case RecordEvent(profile=profile, type=kind, reason=reason, message=message):
                return "Event", profile.name, lambda: kube.record_event(profile, kind, reason, message)
        raise TypeError(f"unknown action {action!r}")
