"""CRI stats: ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats (cgroup usage and the
writable layer)."""

from __future__ import annotations

import time
from typing import Any

from cri_api.v1 import api_pb2 as cri

from hulld.cri.scope import Scope
from hulld.store.records import ContainerRecord, SandboxRecord


class StatsMethods(Scope):
    def _stats(self, record: ContainerRecord) -> Any:
        usage, used, inodes = self.containers.usage(record)
        now = time.time_ns()
        stats = cri.ContainerStats(
            attributes=cri.ContainerAttributes(
                id=record.id,
                metadata=cri.ContainerMetadata(**record.metadata),
                labels=record.labels,
                annotations=record.annotations,
            ),
            writable_layer=cri.FilesystemUsage(
                timestamp=now,
                fs_id=cri.FilesystemIdentifier(mountpoint=str(self.containers.files)),
                used_bytes=cri.UInt64Value(value=used),
                inodes_used=cri.UInt64Value(value=inodes),
            ),
        )
        if usage.cpu_nanoseconds is not None:
            stats.cpu.timestamp = now
            stats.cpu.usage_core_nano_seconds.value = usage.cpu_nanoseconds
        if usage.memory_working_set is not None:
            stats.memory.timestamp = now
            stats.memory.working_set_bytes.value = usage.memory_working_set
            stats.memory.usage_bytes.value = usage.memory_usage or 0
            stats.memory.rss_bytes.value = usage.memory_rss or 0
        return stats

    def ContainerStats(self, request: Any, context: Any) -> Any:  # noqa: N802
        return cri.ContainerStatsResponse(stats=self._stats(self._container(request.container_id)))

    def ListContainerStats(self, request: Any, context: Any) -> Any:  # noqa: N802
        records = self._containers(request.filter, by_state=False)
        return cri.ListContainerStatsResponse(stats=[self._stats(record) for record in records])

    def _sandbox_stats(self, record: SandboxRecord, members: list[ContainerRecord]) -> Any:
        """``members``: the sandbox's containers."""
        containers = [self._stats(container) for container in members]
        stats = cri.PodSandboxStats(
            attributes=cri.PodSandboxAttributes(
                id=record.id,
                metadata=cri.PodSandboxMetadata(**record.metadata),
                labels=record.labels,
                annotations=record.annotations,
            )
        )
        now = time.time_ns()
        stats.linux.cpu.timestamp = now
        stats.linux.cpu.usage_core_nano_seconds.value = sum(c.cpu.usage_core_nano_seconds.value for c in containers)
        stats.linux.memory.timestamp = now
        stats.linux.memory.working_set_bytes.value = sum(c.memory.working_set_bytes.value for c in containers)
        stats.linux.containers.extend(containers)
        return stats

    def PodSandboxStats(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self._sandbox(request.pod_sandbox_id)
        members = [self.containers.refresh(c) for c in self.containers.in_sandbox(record.id)]
        return cri.PodSandboxStatsResponse(stats=self._sandbox_stats(record, members))

    def ListPodSandboxStats(self, request: Any, context: Any) -> Any:  # noqa: N802
        records = self._sandboxes(request.filter, by_state=False)
        by_sandbox: dict[str, list[ContainerRecord]] = {record.id: [] for record in records}
        for container in self.containers.all():  # once for every sandbox listed, not once per sandbox
            by_sandbox.get(container.sandbox_id, []).append(container)
        return cri.ListPodSandboxStatsResponse(
            stats=[self._sandbox_stats(record, by_sandbox[record.id]) for record in records]
        )
