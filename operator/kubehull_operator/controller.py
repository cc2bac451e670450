"""The reconciliation loop: snapshot the cluster, plan, apply the actions; again whenever something changes.

kopf's indices (``handlers.indices``) and the controller's mirrors of Nodes and NodeRuntimes (``mirror``, kept by
its ``reflector`` threads) keep the cluster's state in memory; kopf's event handlers and the reflectors call
``nudge()``. The loop waits for a nudge, lets a burst of events settle for a moment, takes one ``Snapshot`` and
hands it to ``reconcile.plan`` — level-triggered, so a missed or repeated event costs nothing. It starts only
once kopf has listed every indexed kind (``attach``) and the reflectors have listed theirs, so an operator
restart never acts on a half-known cluster.

A write's result reaches the indices only when its watch event arrives. Until then the snapshot shows the
written object as the write returned it (an overlay keyed by the version it replaced, none for an object it
created), so a pass that starts early does not see an old NodeRuntime and push it again, create one twice, or
count a node twice against maxUnavailable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from kubernetes.client.exceptions import ApiException

from kubehull_api.noderuntime import PLURAL as NODE_RUNTIMES
from kubehull_api.noderuntime import NodeRuntime
from kubehull_api.runtimeprofile import RuntimeProfile
from kubehull_operator.kube import Kube
from kubehull_operator.metrics import Metrics
from kubehull_operator.mirror import Mirror
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
from kubehull_operator.reconcile.status import progress_only
from kubehull_operator.reflector import Reflector

logger = logging.getLogger(__name__)

R = TypeVar("R")


class Store(Protocol):
    """One kopf index: object name → a collection holding the record its indexer returned."""

    def __getitem__(self, key: str, /) -> Any: ...
    def items(self) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Indices:
    """kopf's indices of the kinds that come in handfuls (Nodes and NodeRuntimes: the controller's mirrors)."""

    profiles: Store
    runtime_classes: Store
    namespaces: Store
    admission: Store
    """kubehull's admission objects, keyed ``Kind/name``."""


def _version(record: Any) -> str:
    if isinstance(record, NodeRecord | RuntimeClassRecord | AdmissionRecord):
        return record.resource_version
    return str(record.metadata.get("resourceVersion", ""))


def _indexed(store: Store, name: str) -> bool:
    try:
        store[name]
    except KeyError:
        return False
    return True


# Objects the controller writes and reads back through the overlay: kind → (snapshot field, parser of a write's
# response).
TRACKED: dict[str, tuple[str, Callable[[Mapping[str, Any]], Any]]] = {
    "RuntimeProfile": ("profiles", RuntimeProfile.model_validate),
    "Node": ("nodes", node_record),
    "NodeRuntime": ("node_runtimes", node_runtime_record),
    "RuntimeClass": ("runtime_classes", runtime_class_record),
    "Admission": ("admission", admission_record),
}


URGENT = (ApplyRuntimeClass, DeleteRuntimeClass, ApplyAdmission, DeleteAdmission)


def urgent(action: Action) -> bool:
    """Whether ``action`` goes before the NodeRuntime writes of its pass: RuntimeClasses and admission policies
    (what a profile's users wait for first), and label removals (a node stops attracting the handler's pods
    before its NodeRuntime drops the handler, or as soon as its agent reports it broken). New labels wait for
    the NodeRuntimes: each NodeRuntime write starts an agent's work, while a label has a minute's budget after
    its agent's report (at 5000 nodes, labels in between had the last NodeRuntimes wait for thousands of them)."""
    if isinstance(action, SetNodeLabels):
        return any(value is None for value in action.labels.values())
    return isinstance(action, URGENT)


CREATION_HOLD = 60.0  # seconds an object this operator created is shown before the watch shows it


class Overlay:
    """Objects as this operator last wrote them, by kind and name, until the watch catches up. None marks a
    deletion."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # kind → name → (the version the write replaced, None for a creation; the record written; when)
        self._written: dict[str, dict[str, tuple[str | None, Any, float]]] = {kind: {} for kind in TRACKED}
        self._clock = clock

    def record(self, kind: str, name: str, replaced_version: str | None, record: Any) -> None:
        self._written[kind][name] = (replaced_version, record, self._clock())

    def forget(self, kind: str, name: str) -> None:
        self._written[kind].pop(name, None)

    def view(self, kind: str, name: str, indexed: Any) -> Any:
        written_of_kind = self._written[kind]
        if name not in written_of_kind:
            return indexed
        replaced, written, _ = written_of_kind[name]
        indexed_version = None if indexed is None else _version(indexed)
        if indexed_version == replaced:
            return written  # the watch has not delivered the write yet
        del written_of_kind[name]
        return indexed

    def created(self, kind: str, indexed: Store) -> dict[str, Any]:
        """Objects of ``kind`` this operator created that are not indexed yet, by name, for ``CREATION_HOLD`` at
        most: a creation the watch has not shown by then is lost (deleted while the watch was cut, before its
        event came, or created and deleted between two passes), and the snapshot shows what the watch does."""
        shown = {}
        written_of_kind = self._written[kind]
        now = self._clock()
        for name, (replaced, written, when) in list(written_of_kind.items()):
            if replaced is not None or written is None or _indexed(indexed, name):
                continue
            if now - when > CREATION_HOLD:
                del written_of_kind[name]
                continue
            shown[name] = written
        return shown


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
        pass_limit: float = 5.0,
        progress_interval: float = 30.0,
    ) -> None:
        """``own_namespace``: kubehull's, which namespace defaults never cover. ``pass_limit``: seconds of writes
        after which a pass stops to look again if something changed meanwhile (see ``reconcile_once``).
        ``progress_interval``: the least time between two status writes of a profile that change only its
        rollout counts (every pass of a large rollout would write one otherwise)."""
        self.kube = kube
        self.own_namespace = own_namespace
        self.metrics = metrics
        self.settle = settle
        self.retry_after = retry_after
        self.pass_limit = pass_limit
        self.progress_interval = progress_interval
        self._status_written: dict[str, float] = {}  # profile → when this replica last wrote its status
        self._held_until: dict[str, float] = {}  # profile → when a held status is due (a wake-up is set for then)
        self._concurrency = concurrency
        # The writers' own threads: asyncio's default executor is small and shared (kopf runs handlers there).
        self._writers = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="kube-write")
        self._dirty = asyncio.Event()
        self._indices: Indices | None = None
        self.nodes: Mirror[NodeRecord] = Mirror()
        self.node_runtimes: Mirror[NodeRuntime] = Mirror()
        self._stopping = threading.Event()  # tells the reflectors' threads to end (each at its next event)
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
        loop = asyncio.get_running_loop()
        reflectors = (
            Reflector(self.kube, "nodes", node_record, self.nodes, loop, self.nudge),
            Reflector(self.kube, NODE_RUNTIMES, node_runtime_record, self.node_runtimes, loop, self.nudge),
        )
        for reflector in reflectors:
            name = f"watch-{reflector.plural}"
            threading.Thread(target=reflector.run, args=(self._stopping,), name=name, daemon=True).start()
        self._task = loop.create_task(self._run(), name="kubehull reconcile loop")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._writers.shutdown(wait=False, cancel_futures=True)

    @property
    def _listed(self) -> bool:
        return self.nodes.listed and self.node_runtimes.listed

    async def _wait_listed(self) -> None:
        """Until the reflectors have listed every Node and NodeRuntime."""
        waited = 0
        while not self._listed:
            await asyncio.sleep(0.1)
            waited += 1
            if waited % 100 == 0:
                logger.info("waiting for the lists of Nodes and NodeRuntimes")
        logger.info("Nodes and NodeRuntimes listed")

    async def _run(self) -> None:
        await self._wait_listed()
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
            records = self._overlay.created(kind, store)
            for name, values in store.items():
                record = self._overlay.view(kind, name, next(iter(values)))
                if record is not None:
                    records[name] = record
            return records

        return Snapshot(
            profiles=view("RuntimeProfile", indices.profiles),
            nodes=view("Node", self.nodes),
            node_runtimes=view("NodeRuntime", self.node_runtimes),
            runtime_classes=view("RuntimeClass", indices.runtime_classes),
            namespaces={name: next(iter(values)) for name, values in indices.namespaces.items()},
            admission=view("Admission", indices.admission),
            own_namespace=self.own_namespace,
        )

    async def reconcile_once(self) -> bool:
        """One pass; True if some write failed (the loop then retries shortly).

        A new profile's RuntimeClass is written before anything else is planned: planning thousands of nodes
        takes a second, and the RuntimeClass is what the profile's users wait for first. Then the plan: what
        must not wait behind a thousand NodeRuntime writes first (``urgent``), then the rest in order. A pass that
        has written for ``pass_limit`` seconds while new events came in stops there and plans again (the overlay
        keeps that exact), so what those events ask for urgently (a label to remove from a node whose agent
        reports the handler broken, a changed profile's RuntimeClass) waits seconds, not for the last node."""
        before = self.snapshot()
        for gone in self._status_written.keys() - before.profiles.keys():
            del self._status_written[gone]
            self._held_until.pop(gone, None)
        failed = not all(await self._apply_in_order(before, planning.new_runtime_classes(before)))
        snapshot = self.snapshot()
        result = planning.plan(snapshot, datetime.datetime.now(datetime.UTC).replace(microsecond=0))
        self.metrics.observe_statuses(result.statuses)
        if not result.actions:
            return failed
        logger.info("applying %d actions", len(result.actions))
        first = [action for action in result.actions if urgent(action)]
        outcomes = await self._apply_in_order(snapshot, first)
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
            if not urgent(action)
            and not (
                isinstance(action, SetProfileStatus) and (action.profile in written or self._held(snapshot, action))
            )
        ]
        replanned = await self._apply_in_order(snapshot, rest, replan_after=self.pass_limit)
        return failed or not all(outcomes) or not all(replanned)

    async def _apply_in_order(
        self, snapshot: Snapshot, actions: Sequence[Action], *, replan_after: float | None = None
    ) -> list[bool]:
        """``actions`` in order, ``concurrency`` in flight at all times, until they are done or, with
        ``replan_after``, the pass has written that many seconds while new events came in (the rest is planned
        again)."""
        started = time.monotonic()
        slots = asyncio.Semaphore(self._concurrency)

        async def apply(action: Action) -> bool:
            try:
                return await self._apply(snapshot, action)
            finally:
                slots.release()

        writes = []
        async with asyncio.TaskGroup() as group:
            for index, action in enumerate(actions):
                await slots.acquire()
                if replan_after is not None and self._dirty.is_set() and time.monotonic() - started > replan_after:
                    slots.release()
                    left = len(actions) - index
                    logger.info("%d actions left to the next pass, which sees what changed meanwhile", left)
                    break
                writes.append(group.create_task(apply(action)))
        return [write.result() for write in writes]

    def _held(self, snapshot: Snapshot, action: SetProfileStatus) -> bool:
        """Whether to hold back a status that only updates rollout counts, written less than
        ``progress_interval`` ago; a pass comes back for it when the interval is over."""
        written = self._status_written.get(action.profile)
        previous = snapshot.profiles[action.profile].status
        if written is None or not progress_only(previous, action.status):
            return False
        due = written + self.progress_interval
        wait = due - time.monotonic()
        if wait > 0 and self._held_until.get(action.profile) != due:
            self._held_until[action.profile] = due  # one wake-up per held status, not one per pass holding it
            asyncio.get_running_loop().call_later(wait, self.nudge)
        return wait > 0

    def cleanup_pending(self, profile: str) -> list[str]:
        if self._indices is None or not self._listed:
            return ["the operator has not listed the cluster yet"]
        snapshot = self.snapshot()
        if profile not in snapshot.profiles:
            return []
        return planning.cleanup_pending(snapshot, profile)

    # --- applying one action -----------------------------------------------------------------------------------

    async def _apply(self, snapshot: Snapshot, action: Action) -> bool:
        kind, name, request = self._request(snapshot, action)
        try:
            await asyncio.get_running_loop().run_in_executor(self._writers, request)
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
            try:
                response = request()
            except ApiException as error:
                if error.status == 404:
                    self._overlay.forget(kind, name)  # gone, perhaps before the watch ever showed it: show no copy
                raise
            self._overlay.record(kind, name, replaced_version, None if deletes else parse(response))

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

                def write_status() -> dict[str, Any]:
                    response = kube.set_profile_status(name, status)
                    self._status_written[name] = time.monotonic()
                    return response

                return self._tracked(snapshot, "RuntimeProfile", name, write_status)
            case RecordEvent(profile=profile, type=kind, reason=reason, message=message):
                return "Event", profile.name, lambda: kube.record_event(profile, kind, reason, message)
        raise TypeError(f"unknown action {action!r}")
