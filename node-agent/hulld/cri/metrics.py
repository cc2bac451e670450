"""CRI metrics: ListMetricDescriptors, ListPodSandboxMetrics — the container metrics a kubelet serves on
/metrics/cadvisor when it takes them from the runtime (the PodAndContainerStatsFromCRI feature) instead of from
cAdvisor. The names, types and labels are cAdvisor's, so dashboards and alerts written against cAdvisor keep
working; the values are the same cgroup and writable-layer readings as ContainerStats.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from cri_api.v1 import api_pb2 as cri

from hulld.cri.scope import Scope
from hulld.node.cgroups import Usage
from hulld.store.records import ContainerRecord, SandboxRecord

LABEL_KEYS = ("container", "pod", "namespace", "id", "image")
"""Every container metric's labels: its name, its pod's name and namespace, its ID and its image."""


@dataclasses.dataclass(frozen=True)
class Reading:
    """One container metric: how to read it from a container's usage and its writable layer's bytes. Values
    are whole numbers (the CRI's UInt64Value): CPU in whole seconds, as containerd sends it."""

    name: str
    help: str
    kind: cri.MetricType.ValueType
    value: Callable[[Usage, int], float | int | None]


READINGS = (
    Reading(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        cri.COUNTER,
        lambda usage, _used: None if usage.cpu_nanoseconds is None else usage.cpu_nanoseconds // 10**9,
    ),
    Reading(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        cri.GAUGE,
        lambda usage, _used: usage.memory_usage,
    ),
    Reading(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        cri.GAUGE,
        lambda usage, _used: usage.memory_working_set,
    ),
    Reading(
        "container_memory_rss",
        "Size of RSS in bytes.",
        cri.GAUGE,
        lambda usage, _used: usage.memory_rss,
    ),
    Reading(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem (its writable layer).",
        cri.GAUGE,
        lambda _usage, used: used,
    ),
)


class MetricsMethods(Scope):
    def ListMetricDescriptors(self, request: Any, context: Any) -> Any:  # noqa: N802 - the CRI's method names
        return cri.ListMetricDescriptorsResponse(
            descriptors=[
                cri.MetricDescriptor(name=reading.name, help=reading.help, label_keys=LABEL_KEYS)
                for reading in READINGS
            ]
        )

    def ListPodSandboxMetrics(self, request: Any, context: Any) -> Any:  # noqa: N802
        sandboxes = [record for record in self.sandboxes.all() if self._mine(record)]
        by_sandbox: dict[str, list[ContainerRecord]] = {record.id: [] for record in sandboxes}
        for container in self.containers.all():
            if container.status.state == "RUNNING":
                by_sandbox.get(container.sandbox_id, []).append(container)
        return cri.ListPodSandboxMetricsResponse(
            pod_metrics=[self._pod_metrics(record, by_sandbox[record.id]) for record in sandboxes]
        )

    def _pod_metrics(self, sandbox: SandboxRecord, containers: list[ContainerRecord]) -> Any:
        return cri.PodSandboxMetrics(
            pod_sandbox_id=sandbox.id,
            container_metrics=[self._container_metrics(sandbox, container) for container in containers],
        )

    def _container_metrics(self, sandbox: SandboxRecord, container: ContainerRecord) -> Any:
        usage, used, _ = self.containers.usage(container)
        now = time.time_ns()
        labels = [
            str(container.metadata.get("name", "")),
            str(sandbox.metadata.get("name", "")),
            str(sandbox.metadata.get("namespace", "")),
            container.id,
            container.image,
        ]
        metrics = []
        for reading in READINGS:
            value = reading.value(usage, used)
            if value is not None:
                metrics.append(
                    cri.Metric(
                        name=reading.name,
                        timestamp=now,
                        metric_type=reading.kind,
                        label_values=labels,
                        value=cri.UInt64Value(value=int(value)),
                    )
                )
        return cri.ContainerMetrics(container_id=container.id, metrics=metrics)
