"""What every RuntimeService method group shares: the domain it calls, and the one socket it serves.

One servicer serves one socket: the kubelet's, or the private one of the node agent. Each sees only the pods
made through it (``private`` on the records): in listings, stats and events, and by ID, where another
socket's pod is NOT_FOUND (and stopping or removing it a no-op, as for any unknown ID).
"""

from __future__ import annotations

import threading
from typing import Any

from hulld.config import Config
from hulld.containers import Containers
from hulld.cri import convert
from hulld.sandboxes import Sandboxes
from hulld.store.records import ContainerRecord, SandboxRecord
from hulld.streaming.server import StreamingServer


class Scope:
    def __init__(
        self,
        config: Config,
        sandboxes: Sandboxes,
        containers: Containers,
        streaming: StreamingServer,
        *,
        private: bool,
        recovered: threading.Event,
    ) -> None:
        self.config = config
        self.sandboxes = sandboxes
        self.containers = containers
        self.streaming = streaming
        self.private = private
        """Serving the private socket: only private pods exist here; else only the others."""
        self.recovered = recovered
        self.pod_cidr = ""

    def reconfigure(self, config: Config) -> None:
        self.config = config

    def _mine(self, record: SandboxRecord | ContainerRecord) -> bool:
        return record.private == self.private

    def _sandbox(self, sandbox_id: str) -> SandboxRecord:
        return self.sandboxes.refresh(self.sandboxes.records.get(sandbox_id, self._mine))

    def _container(self, container_id: str) -> ContainerRecord:
        return self.containers.get(self.containers.records.get(container_id, self._mine).id)

    def _containers(self, wanted: Any, *, by_state: bool) -> list[ContainerRecord]:
        """The containers a ContainerFilter (or ContainerStatsFilter, which has no state) selects."""
        return [
            record
            for record in self.containers.all()
            if self._mine(record)
            and (not wanted.id or record.id.startswith(wanted.id))
            and (not wanted.pod_sandbox_id or record.sandbox_id.startswith(wanted.pod_sandbox_id))
            and (
                not by_state
                or not wanted.HasField("state")
                or convert.CONTAINER_STATES[record.status.state] == wanted.state.state
            )
            and convert.labels_match(record.labels, wanted.label_selector)
        ]

    def _sandboxes(self, wanted: Any, *, by_state: bool) -> list[SandboxRecord]:
        """The sandboxes a PodSandboxFilter (or PodSandboxStatsFilter, which has no state) selects."""
        return [
            record
            for record in self.sandboxes.all()
            if self._mine(record)
            and (not wanted.id or record.id.startswith(wanted.id))
            and (
                not by_state
                or not wanted.HasField("state")
                or convert.SANDBOX_STATES[record.status.state] == wanted.state.state
            )
            and convert.labels_match(record.labels, wanted.label_selector)
        ]
