"""CRI GetContainerEvents: created, started, stopped and deleted events of this socket's containers."""

from __future__ import annotations

import queue
from typing import Any

from cri_api.v1 import api_pb2 as cri

from hulld.cri import convert
from hulld.cri.scope import Scope


class EventMethods(Scope):
    def GetContainerEvents(self, request: Any, context: Any) -> Any:  # noqa: N802
        kinds = {
            "CREATED": cri.CONTAINER_CREATED_EVENT,
            "STARTED": cri.CONTAINER_STARTED_EVENT,
            "STOPPED": cri.CONTAINER_STOPPED_EVENT,
            "DELETED": cri.CONTAINER_DELETED_EVENT,
        }
        with self.containers.events.subscribe() as mailbox:
            while context.is_active():
                try:
                    event = mailbox.get(timeout=1)
                except queue.Empty:
                    continue
                record = event.record
                if not self._mine(record):
                    continue
                sandbox = self.sandboxes.records.find(record.sandbox_id)
                pod = cri.PodSandboxStatus(id=record.sandbox_id, state=cri.SANDBOX_NOTREADY)
                if sandbox is not None:
                    pod = cri.PodSandboxStatus(
                        id=sandbox.id,
                        state=convert.SANDBOX_STATES[sandbox.status.state],
                        metadata=cri.PodSandboxMetadata(**sandbox.metadata),
                    )
                status = convert.container_status(record)
                yield cri.ContainerEventResponse(
                    container_id=record.id,
                    container_event_type=kinds[event.kind],
                    created_at=event.at,
                    pod_sandbox_status=pod,
                    containers_statuses=[status],
                )
