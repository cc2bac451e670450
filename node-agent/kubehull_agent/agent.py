"""The node loop: NodeRuntime spec → hulld configuration → reload → probes → NodeRuntime status.

It acts when the spec's generation differs from the one it last applied (so its own status writes do not
wake it), and re-probes every ``reprobe_interval`` so that a handler that breaks later is reported. A probe
round with a handler not ready is repeated sooner, after 5 s and then twice as long each time up to that
interval: a failure that passes (hulld restarting, a runtime being installed) is not reported for minutes.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import grpc

from hulld.atomic import write_atomically
from kubehull_agent import probe, render
from kubehull_agent.kube import NodeRuntimes
from kubehull_agent.metrics import Metrics
from kubehull_api.noderuntime import NodeRuntime

logger = logging.getLogger(__name__)

HULLD_RUNTIME = "hulld://"
"""How a kubelet that talks to hulld reports its runtime (hulld's CRI Version: runtime name "hulld")."""
FIRST_RETRY = 5.0
"""Seconds before a probe round with a handler not ready is repeated (doubling up to the reprobe interval)."""


class Agent:
    def __init__(
        self,
        *,
        node_runtimes: NodeRuntimes,
        prober: probe.Prober,
        metrics: Metrics,
        base_config: Path,
        hulld_config: Path,
        hulld_pid_file: Path,
        host_runs_systemd: bool = False,
        reprobe_interval: float = 300.0,
    ) -> None:
        self.node_runtimes = node_runtimes
        self.prober = prober
        self.metrics = metrics
        running = tomllib.loads(hulld_config.read_text()) if hulld_config.exists() else None
        self.base = render.with_cgroup_driver(tomllib.loads(base_config.read_text()), running, host_runs_systemd)
        self.hulld_config = hulld_config
        self.hulld_pid_file = hulld_pid_file
        self.reprobe_interval = reprobe_interval
        self.applied_generation: int | None = None
        self.next_probe = 0.0
        """When the next probe round is due (time.monotonic())."""
        self.retry_delay = FIRST_RETRY
        self.ready = threading.Event()
        self.swept = False
        """Whether the probe pods an earlier agent left were looked for (once, when hulld first answers)."""

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                current = self.node_runtimes.get()
                if current is not None:
                    self.step(current)
                until_due = self.next_probe - time.monotonic()
                for changed in self.node_runtimes.watch(timeout=max(1, int(min(until_due, 60)))):
                    self.step(changed)
                    if stop.is_set():
                        break
            except Exception:
                logger.exception("node loop failed; retrying")
                stop.wait(2)

    def step(self, node_runtime: NodeRuntime) -> None:
        if not self.swept:
            try:
                removed = self.prober.remove_leftovers()
            except grpc.RpcError as error:  # hulld not there yet: the next step tries again
                logger.warning("cannot look for leftover probe pods yet: %s", error.code().name)
            else:
                self.swept = True
                if removed:
                    logger.info("removed %d probe pods an earlier agent left", removed)
        due = time.monotonic() >= self.next_probe
        if node_runtime.generation == self.applied_generation and not due:
            return
        handlers = node_runtime.spec.handlers
        kubelet_runtime = self.node_runtimes.kubelet_runtime()
        if kubelet_runtime.startswith(HULLD_RUNTIME):
            excluded = {h.name: problem for h in handlers if (problem := self.prober.binary_problem(h)) is not None}
            self._apply(
                render.render(self.base, handlers, excluded, self._running_handlers()),
                {h.name for h in handlers if h.name not in excluded},
            )
            results = {handler.name: self.prober.probe(handler) for handler in handlers}
        else:
            # hulld would serve handlers that the kubelet never asks for: pods would fail "no runtime for handler".
            message = (
                f"this node's kubelet uses {kubelet_runtime[:200] or 'a runtime it has not reported'}, not hulld;"
                " kubehull's handlers need hulld as the node's CRI runtime"
            )
            results = {handler.name: probe.Result(False, "UnsupportedRuntime", message, 0.0) for handler in handlers}
        if all(result.ready for result in results.values()):
            self.next_probe, self.retry_delay = time.monotonic() + self.reprobe_interval, FIRST_RETRY
        else:
            self.next_probe = time.monotonic() + self.retry_delay
            self.retry_delay = min(self.retry_delay * 2, self.reprobe_interval)
        self._report(node_runtime, results)
        self.applied_generation = node_runtime.generation

    def _running_handlers(self) -> dict[str, Any]:
        try:
            handlers: dict[str, Any] = tomllib.loads(self.hulld_config.read_text()).get("handlers", {})
            return handlers
        except (FileNotFoundError, tomllib.TOMLDecodeError):
            return {}

    def _serves(self, wanted: set[str]) -> bool:
        """Whether hulld reports every handler in ``wanted``."""
        try:
            return wanted <= self.prober.runtime_status()[2]
        except Exception:  # hulld may be briefly unavailable: not yet
            return False

    def _apply(self, text: str, wanted: set[str]) -> None:
        """Write hulld's configuration and have hulld reload it — again if an earlier reload did not take (a
        signal lost while hulld started, say): the file alone proves nothing."""
        try:
            unchanged = self.hulld_config.read_text() == text
        except FileNotFoundError:
            unchanged = False
        if unchanged and self._serves(wanted):
            return
        if not unchanged:
            write_atomically(self.hulld_config, text)
            self.metrics.renders.inc()
        try:
            os.kill(int(self.hulld_pid_file.read_text()), signal.SIGHUP)
        except (OSError, ValueError) as error:
            logger.error("cannot signal hulld to reload: %s", error)
            self.metrics.reload_failures.inc()
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._serves(wanted):
                logger.info("hulld reloaded with handlers %s", ", ".join(sorted(wanted)) or "(none)")
                return
            time.sleep(0.1)
        logger.error("hulld did not take the new configuration (handlers %s)", sorted(wanted))
        self.metrics.reload_failures.inc()

    def _report(self, node_runtime: NodeRuntime, results: dict[str, probe.Result]) -> None:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            ready, version, _ = self.prober.runtime_status()
        except Exception:
            ready, version = False, ""
        self.metrics.hulld_up.set(1 if ready else 0)
        self.metrics.hulld_info.clear()
        if version:
            self.metrics.hulld_info.labels(version).set(1)
        self.metrics.handler_ready.clear()
        handlers = []
        configs = {handler.name: handler for handler in node_runtime.spec.handlers}
        for name, result in sorted(results.items()):
            self.metrics.handler_ready.labels(name).set(1 if result.ready else 0)
            self.metrics.probe_duration.labels(name, "ready" if result.ready else result.reason).observe(
                result.duration
            )
            handlers.append(
                {
                    "name": name,
                    "configDigest": configs[name].runtime_digest(),
                    "ready": result.ready,
                    "reason": result.reason,
                    "message": result.message,
                    "binaryVersion": result.binary_version,
                    "lastProbeTime": now,
                    "probeDurationSeconds": round(result.duration, 3),
                }
            )
            if not result.ready:
                logger.warning("handler %s not ready: %s: %s", name, result.reason, result.message)
        status = {
            "observedGeneration": node_runtime.generation,
            "runtime": {"name": "hulld", "version": version, "ready": ready},
            "handlers": handlers,
            "handlersReady": f"{sum(result.ready for result in results.values())}/{len(results)}",
        }
        try:
            self.node_runtimes.write_status(status)
        except Exception:
            self.metrics.status_writes.labels("error").inc()
            raise
        self.metrics.status_writes.labels("ok").inc()
        self.ready.set()
