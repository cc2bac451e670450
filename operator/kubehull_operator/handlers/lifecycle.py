"""Operator start-up and shutdown: kopf settings, and the controller's loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubehull_operator.controller import Controller

FINALIZER = "kubehull.io/cleanup"


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf stores each object's last-handled state for on.update handlers; kubehull has none (the controller
    is level-triggered), so keeping it would only cost one more write per profile change. Nor is it built: kopf
    deep-copies every event's whole object for it, thousands a second when a profile changes at 5000 nodes."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Handler progress in annotations: the CRD's status schema is kubehull's alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubehull.io")
    settings.persistence.diffbase_storage = NoDiffBase()
    # The controller records the events that matter itself; kopf's per-handler chatter would be API writes too.
    settings.posting.enabled = False
    settings.posting.level = logging.WARNING
    controller: Controller = memo["controller"]
    controller.start()


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo["controller"]
    await controller.stop()
    # kopf leaves the waiter on its stop flag pending when a signal stopped it, then waits 5 s for that task.
    stop_flag: asyncio.Future[None] = memo["stop_flag"]
    if not stop_flag.done():
        stop_flag.set_result(None)
