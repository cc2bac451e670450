"""The operator's Prometheus metrics, on a registry of its own (served by ``__main__`` on --metrics-port)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kubehull_api.runtimeprofile import RuntimeProfileStatus


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "kubehull_operator_reconciles",
            "Objects reconciled (written to bring them to the desired state), by kind and result.",
            ["kind", "result"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "kubehull_operator_reconcile_duration_seconds",
            "Duration of one reconciliation pass over the whole cluster (snapshot, plan, writes).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.api_writes = Counter(
            "kubehull_operator_api_writes",
            "Writes the operator sent to the Kubernetes API, by resource, verb and result.",
            ["resource", "verb", "result"],
            registry=self.registry,
        )
        self.profiles = Gauge(
            "kubehull_operator_profiles",
            "RuntimeProfiles by condition type and status.",
            ["condition", "status"],
            registry=self.registry,
        )
        self.profile_nodes = Gauge(
            "kubehull_operator_profile_nodes",
            "Nodes of each RuntimeProfile by state (desired, ready, updating, failed).",
            ["profile", "state"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "kubehull_operator_leader", "1 while this replica holds the leader lease.", registry=self.registry
        )

    def observe_statuses(self, statuses: Mapping[str, RuntimeProfileStatus]) -> None:
        self.profiles.clear()
        self.profile_nodes.clear()
        for condition_type in ("Ready", "RuntimeClassReady", "NodesReady", "Degraded"):
            for value in ("True", "False", "Unknown"):
                self.profiles.labels(condition_type, value).set(0)
        for name, status in statuses.items():
            for condition in status.conditions:
                self.profiles.labels(condition.type, condition.status.value).inc()
            for state, count in status.nodes.model_dump().items():
                self.profile_nodes.labels(name, state).set(count)
