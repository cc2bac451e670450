"""The node agent's Prometheus metrics (hulld serves its own; docs/agent.md says how to scrape both)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.handler_ready = Gauge(
            "kubehull_agent_handler_ready",
            "1 if the handler passed its last probe.",
            ["handler"],
            registry=self.registry,
        )
        self.probe_duration = Histogram(
            "kubehull_agent_probe_duration_seconds",
            "Duration of handler probes.",
            ["handler", "result"],
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.renders = Counter(
            "kubehull_agent_config_renders",
            "Runtime configurations written because they changed (hulld's file, or containerd's drop-in).",
            registry=self.registry,
        )
        self.reload_failures = Counter(
            "kubehull_agent_reload_failures",
            "Reloads (hulld) or restarts (containerd) that failed or did not take effect.",
            registry=self.registry,
        )
        self.hulld_up = Gauge(
            "kubehull_agent_hulld_up", "1 if hulld answers on its socket and is ready.", registry=self.registry
        )
        self.hulld_info = Gauge(
            "kubehull_agent_hulld_info", "hulld's version (value 1).", ["version"], registry=self.registry
        )
        self.lifecycle = Counter(
            "kubehull_agent_hulld_lifecycle",
            "What the agent did to have the right hulld running: installed (a version), "
            "started, adopted (one already running) or upgraded.",
            ["action"],
            registry=self.registry,
        )
        self.status_writes = Counter(
            "kubehull_agent_status_writes", "NodeRuntime status updates written.", ["result"], registry=self.registry
        )
