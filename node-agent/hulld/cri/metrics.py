"""CRI metrics: ListMetricDescriptors, ListPodSandboxMetrics — the container metrics a kubelet serves on
/metrics/cadvisor when it takes them from the runtime (the PodAndContainerStatsFromCRI feature) instead of from
cAdvisor. Names, types, help and extra labels are cAdvisor's, so dashboards and alerts written against cAdvisor
keep working; every metric carries the container's name, its pod's name and namespace, its ID and its image.

Values are the CRI's whole numbers (UInt64Value): times in whole seconds, as CRI-O sends them. A reading the node
lacks (swap without swap accounting, block I/O on a device that reports none) is left out rather than sent as 0.
Not reported: hugetlb (no hugetlb cgroup), pressure stall times (cgroup v2 only), soft ulimits (-1 for unlimited
does not fit the CRI's unsigned values) — critest lists all three as not yet implemented by runtimes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from cri_api.v1 import api_pb2 as cri

from hulld.containers import Readings
from hulld.cri.scope import Scope
from hulld.node.namespaces import InterfaceCounters
from hulld.store.records import ContainerRecord, SandboxRecord

LABEL_KEYS = ("container", "pod", "namespace", "id", "image")
NANOSECONDS = 10**9
UNLIMITED = 10**18
"""A cgroup v1 limit above this is "no limit" (its files hold ~2^63): reported as 0, as cAdvisor does."""

Values = list[tuple[tuple[str, ...], int]]
"""A metric's values: the values of its extra labels, and the number."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One container's readings, with the times the metrics need."""

    readings: Readings
    started_at: int
    """Nanoseconds since the epoch."""
    now: int


@dataclasses.dataclass(frozen=True)
class ContainerMetric:
    name: str
    help: str
    kind: cri.MetricType.ValueType
    values: Callable[[Sample], Values]
    extra_labels: tuple[str, ...] = ()


def one(read: Callable[[Sample], int | None]) -> Callable[[Sample], Values]:
    """A metric without extra labels: one value, or none when the node lacks the reading."""

    def values(sample: Sample) -> Values:
        value = read(sample)
        return [] if value is None else [((), value)]

    return values


def seconds(nanoseconds: int | None) -> int | None:
    return None if nanoseconds is None else nanoseconds // NANOSECONDS


def limit(value: int | None) -> int | None:
    return None if value is None else 0 if value > UNLIMITED else value


def io(operation: str, column: int) -> Callable[[Sample], Values]:
    """Block I/O of one operation (Read, Write), bytes (column 0) or requests (1), by device."""
    return lambda sample: [
        ((device,), counts[column])
        for (device, _, _, kind), counts in sample.readings.details.io.items()
        if kind == operation
    ]


CONTAINER_METRICS = (
    # --- CPU ---
    ContainerMetric(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        cri.COUNTER,
        lambda s: (
            []
            if s.readings.usage.cpu_nanoseconds is None
            else [(("total",), seconds(s.readings.usage.cpu_nanoseconds) or 0)]
        ),
        ("cpu",),
    ),
    ContainerMetric(
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        cri.COUNTER,
        one(lambda s: seconds(s.readings.details.cpu_user_nanoseconds)),
    ),
    ContainerMetric(
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        cri.COUNTER,
        one(lambda s: seconds(s.readings.details.cpu_system_nanoseconds)),
    ),
    ContainerMetric(
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        cri.COUNTER,
        one(lambda s: s.readings.details.cfs_periods),
    ),
    ContainerMetric(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        cri.COUNTER,
        one(lambda s: s.readings.details.cfs_throttled_periods),
    ),
    ContainerMetric(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        cri.COUNTER,
        one(lambda s: seconds(s.readings.details.cfs_throttled_nanoseconds)),
    ),
    # --- memory ---
    ContainerMetric(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        cri.GAUGE,
        one(lambda s: s.readings.details.memory_cache),
    ),
    ContainerMetric(
        "container_memory_rss", "Size of RSS in bytes.", cri.GAUGE, one(lambda s: s.readings.usage.memory_rss)
    ),
    ContainerMetric(
        "container_memory_kernel_usage",
        "Size of kernel memory allocated in bytes.",
        cri.GAUGE,
        one(lambda s: s.readings.details.memory_kernel),
    ),
    ContainerMetric(
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
        cri.GAUGE,
        one(lambda s: s.readings.details.memory_mapped_file),
    ),
    ContainerMetric(
        "container_memory_swap",
        "Container swap usage in bytes.",
        cri.GAUGE,
        one(lambda s: s.readings.details.memory_swap),
    ),
    ContainerMetric(
        "container_memory_failcnt",
        "Number of memory usage hits limits.",
        cri.COUNTER,
        one(lambda s: s.readings.details.memory_failcnt),
    ),
    ContainerMetric(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        cri.GAUGE,
        one(lambda s: s.readings.usage.memory_usage),
    ),
    ContainerMetric(
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes.",
        cri.GAUGE,
        one(lambda s: s.readings.details.memory_max_usage),
    ),
    ContainerMetric(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        cri.GAUGE,
        one(lambda s: s.readings.usage.memory_working_set),
    ),
    ContainerMetric(
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        cri.COUNTER,
        lambda s: [((kind, scope), count) for (kind, scope), count in s.readings.details.page_faults.items()],
        ("failure_type", "scope"),
    ),
    ContainerMetric(
        "container_oom_events_total",
        "Count of out of memory events observed for the container.",
        cri.COUNTER,
        one(lambda s: s.readings.details.oom_kills),
    ),
    # --- filesystem and block I/O ---
    ContainerMetric(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem (its writable layer).",
        cri.GAUGE,
        one(lambda s: s.readings.writable_bytes),
    ),
    ContainerMetric(
        "container_fs_limit_bytes",
        "Number of bytes that can be consumed by the container on this filesystem.",
        cri.GAUGE,
        one(lambda s: s.readings.filesystem.f_blocks * s.readings.filesystem.f_frsize),
    ),
    ContainerMetric(
        "container_fs_inodes_total",
        "Number of Inodes.",
        cri.GAUGE,
        one(lambda s: s.readings.filesystem.f_files),
    ),
    ContainerMetric(
        "container_fs_inodes_free",
        "Number of available Inodes.",
        cri.GAUGE,
        one(lambda s: s.readings.filesystem.f_ffree),
    ),
    ContainerMetric(
        "container_fs_reads_bytes_total", "Cumulative count of bytes read.", cri.COUNTER, io("Read", 0), ("device",)
    ),
    ContainerMetric(
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written.",
        cri.COUNTER,
        io("Write", 0),
        ("device",),
    ),
    ContainerMetric(
        "container_fs_reads_total", "Cumulative count of reads completed.", cri.COUNTER, io("Read", 1), ("device",)
    ),
    ContainerMetric(
        "container_fs_writes_total",
        "Cumulative count of writes completed.",
        cri.COUNTER,
        io("Write", 1),
        ("device",),
    ),
    ContainerMetric(
        "container_blkio_device_usage_total",
        "Blkio device bytes usage.",
        cri.COUNTER,
        lambda s: [
            ((device, str(major), str(minor), operation), counts[0])
            for (device, major, minor, operation), counts in s.readings.details.io.items()
        ],
        ("device", "major", "minor", "operation"),
    ),
    # --- processes ---
    ContainerMetric(
        "container_processes",
        "Number of processes running inside the container.",
        cri.GAUGE,
        one(lambda s: s.readings.details.processes),
    ),
    ContainerMetric(
        "container_threads",
        "Number of threads running inside the container.",
        cri.GAUGE,
        one(lambda s: s.readings.details.threads),
    ),
    ContainerMetric(
        "container_threads_max",
        "Maximum number of threads allowed inside the container, infinity if value is zero.",
        cri.GAUGE,
        one(lambda s: s.readings.details.threads_max),
    ),
    ContainerMetric(
        "container_file_descriptors",
        "Number of open file descriptors for the container.",
        cri.GAUGE,
        one(lambda s: None if s.readings.open_files is None else s.readings.open_files.descriptors),
    ),
    ContainerMetric(
        "container_sockets",
        "Number of open sockets for the container.",
        cri.GAUGE,
        one(lambda s: None if s.readings.open_files is None else s.readings.open_files.sockets),
    ),
    # --- the container's spec, as its cgroup holds it ---
    ContainerMetric(
        "container_spec_cpu_period",
        "CPU period of the container.",
        cri.GAUGE,
        one(lambda s: s.readings.details.cpu_period_microseconds),
    ),
    ContainerMetric(
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        cri.GAUGE,
        one(lambda s: s.readings.details.cpu_quota_microseconds),
    ),
    ContainerMetric(
        "container_spec_cpu_shares",
        "CPU share of the container.",
        cri.GAUGE,
        one(lambda s: s.readings.details.cpu_shares),
    ),
    ContainerMetric(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        cri.GAUGE,
        one(lambda s: limit(s.readings.details.memory_limit)),
    ),
    ContainerMetric(
        "container_spec_memory_reservation_limit_bytes",
        "Memory reservation limit for the container.",
        cri.GAUGE,
        one(lambda s: limit(s.readings.details.memory_reservation)),
    ),
    ContainerMetric(
        "container_spec_memory_swap_limit_bytes",
        "Memory swap limit for the container.",
        cri.GAUGE,
        one(lambda s: limit(s.readings.details.memory_swap_limit)),
    ),
    # --- times ---
    ContainerMetric(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        cri.GAUGE,
        one(lambda s: seconds(s.started_at)),
    ),
    ContainerMetric(
        "container_last_seen",
        "Last time a container was seen by the exporter.",
        cri.GAUGE,
        one(lambda s: seconds(s.now)),
    ),
)


@dataclasses.dataclass(frozen=True)
class NetworkMetric:
    name: str
    help: str
    value: Callable[[InterfaceCounters], int]


NETWORK_METRICS = (
    NetworkMetric(
        "container_network_receive_bytes_total", "Cumulative count of bytes received.", lambda c: c.receive_bytes
    ),
    NetworkMetric(
        "container_network_receive_packets_total", "Cumulative count of packets received.", lambda c: c.receive_packets
    ),
    NetworkMetric(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving.",
        lambda c: c.receive_dropped,
    ),
    NetworkMetric(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
        lambda c: c.receive_errors,
    ),
    NetworkMetric(
        "container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", lambda c: c.transmit_bytes
    ),
    NetworkMetric(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted.",
        lambda c: c.transmit_packets,
    ),
    NetworkMetric(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting.",
        lambda c: c.transmit_dropped,
    ),
    NetworkMetric(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        lambda c: c.transmit_errors,
    ),
)
"""The pod's, reported once per interface of its network namespace (its containers share it), as cAdvisor
reports them for the pod's infra container, named ``POD``."""
POD_CONTAINER = "POD"


class MetricsMethods(Scope):
    def ListMetricDescriptors(self, request: Any, context: Any) -> Any:  # noqa: N802 - the CRI's method names
        described = [(metric.name, metric.help, metric.extra_labels) for metric in CONTAINER_METRICS]
        described += [(metric.name, metric.help, ("interface",)) for metric in NETWORK_METRICS]
        return cri.ListMetricDescriptorsResponse(
            descriptors=[
                cri.MetricDescriptor(name=name, help=text, label_keys=[*LABEL_KEYS, *extra])
                for name, text, extra in described
            ]
        )

    def ListPodSandboxMetrics(self, request: Any, context: Any) -> Any:  # noqa: N802
        sandboxes = [record for record in self.sandboxes.all() if self._mine(record)]
        by_sandbox: dict[str, list[ContainerRecord]] = {record.id: [] for record in sandboxes}
        for container in self.containers.all():
            by_sandbox.get(container.sandbox_id, []).append(container)
        return cri.ListPodSandboxMetricsResponse(
            pod_metrics=[self._pod_metrics(record, by_sandbox[record.id]) for record in sandboxes]
        )

    def _pod_metrics(self, sandbox: SandboxRecord, containers: list[ContainerRecord]) -> Any:
        now = time.time_ns()
        labels = [POD_CONTAINER, *_pod_labels(sandbox), sandbox.id, ""]
        network = [
            _metric(metric.name, cri.COUNTER, [*labels, interface], metric.value(counters), now)
            for interface, counters in sorted(self.sandboxes.interface_counters(sandbox).items())
            for metric in NETWORK_METRICS
        ]
        container_metrics = []
        for container in containers:
            readings = self.containers.readings(self.containers.refresh(container))
            if readings is not None:
                sample = Sample(readings, container.status.started_at, now)
                container_metrics.append(self._container_metrics(sandbox, container, sample))
        return cri.PodSandboxMetrics(pod_sandbox_id=sandbox.id, metrics=network, container_metrics=container_metrics)

    @staticmethod
    def _container_metrics(sandbox: SandboxRecord, container: ContainerRecord, sample: Sample) -> Any:
        labels = [str(container.metadata.get("name", "")), *_pod_labels(sandbox), container.id, container.image]
        return cri.ContainerMetrics(
            container_id=container.id,
            metrics=[
                _metric(metric.name, metric.kind, [*labels, *extra], value, sample.now)
                for metric in CONTAINER_METRICS
                for extra, value in metric.values(sample)
            ],
        )


def _pod_labels(sandbox: SandboxRecord) -> list[str]:
    return [str(sandbox.metadata.get("name", "")), str(sandbox.metadata.get("namespace", ""))]


def _metric(name: str, kind: cri.MetricType.ValueType, labels: list[str], value: int, now: int) -> Any:
    return cri.Metric(
        name=name, timestamp=now, metric_type=kind, label_values=labels, value=cri.UInt64Value(value=value)
    )
