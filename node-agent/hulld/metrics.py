"""hulld's Prometheus metrics, on a registry of its own (served on server.metrics_address)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.operations = Counter(
            "hulld_cri_operations",
            "CRI calls served, by operation, runtime handler and gRPC status code.",
            ["operation", "handler", "code"],
            registry=self.registry,
        )
        self.operation_errors = Counter(
            "hulld_cri_operation_errors",
            "CRI calls that failed, by operation, runtime handler and gRPC code.",
            ["operation", "handler", "code"],
            registry=self.registry,
        )
        self.operation_duration = Histogram(
            "hulld_cri_operation_duration_seconds",
            "Latency of CRI calls, by operation and runtime handler.",
            ["operation", "handler"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.image_pulls = Counter(
            "hulld_image_pulls",
            "Image pulls, by result (ok, or the error kind).",
            ["result"],
            registry=self.registry,
        )
        self.image_pull_bytes = Counter(
            "hulld_image_pull_bytes",
            "Bytes downloaded from registries.",
            registry=self.registry,
        )
        self.image_pull_duration = Histogram(
            "hulld_image_pull_duration_seconds",
            "Duration of image pulls, by result.",
            ["result"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.images = Gauge("hulld_images", "Images in the store.", registry=self.registry)
        self.sandboxes = Gauge(
            "hulld_sandboxes",
            "Pod sandboxes by state and runtime handler.",
            ["state", "handler"],
            registry=self.registry,
        )
        self.containers = Gauge(
            "hulld_containers",
            "Containers by state and runtime handler.",
            ["state", "handler"],
            registry=self.registry,
        )
        self.streaming_sessions = Counter(
            "hulld_streaming_sessions",
            "Streaming sessions served, by kind (exec, attach, portforward), runtime handler and result (ok; error: "
            "the command could not start or a forwarded port could not be reached; abandoned: the client never "
            "opened its streams).",
            ["kind", "handler", "result"],
            registry=self.registry,
        )
        self.streaming_bytes = Counter(
            "hulld_streaming_bytes",
            "Bytes of streaming sessions, framing included, by kind, runtime handler and direction (in: from the "
            "client).",
            ["kind", "handler", "direction"],
            registry=self.registry,
        )
