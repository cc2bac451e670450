"""The node loop: NodeRuntime spec → the node's runtime configuration → reload → probes → NodeRuntime status.

The runtime configured is the one the node's kubelet reports using: hulld (its configuration file, reloaded
with SIGHUP), or containerd 2.x (a drop-in, containerd restarted when it changed: containerd.py); on any other,
every handler is reported ``UnsupportedRuntime``.

It acts when the spec's generation differs from the one it last applied (so its own status writes do not
wake it), and re-probes every ``reprobe_interval`` so that a handler that breaks later is reported. A probe
round with a handler not ready is repeated sooner, after 5 s and then twice as long each time up to that
interval: a failure that passes (hulld restarting, a runtime being installed) is not reported for minutes.
"""

from __future__ import annotations

import dataclasses
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
from kubehull_agent import containerd, probe, render
from kubehull_agent.kube import NodeRuntimes
from kubehull_agent.metrics import Metrics
from kubehull_api.engines import Engine
from kubehull_api.noderuntime import HandlerConfig, HandlerStatus, NodeRuntime

logger = logging.getLogger(__name__)

HULLD_RUNTIME = "hulld://"
"""How a kubelet that talks to hulld reports its runtime (hulld's CRI Version: runtime name "hulld")."""
CONTAINERD_RUNTIME = "containerd://"
FIRST_RETRY = 5.0
"""Seconds before a probe round with a handler not ready is repeated (doubling up to the reprobe interval)."""


@dataclasses.dataclass(frozen=True)
class ContainerdNode:
    """How the agent configures and probes a node's containerd."""

    dropin: containerd.DropIn
    prober: probe.Prober
    """Through containerd's CRI socket."""


def containerd_major(kubelet_runtime: str) -> int | None:
    """containerd's major version from the kubelet's ``containerd://v2.4.2`` (None if it says none)."""
    version = kubelet_runtime.removeprefix(CONTAINERD_RUNTIME).lstrip("v")
    major = version.split(".", 1)[0]
    return int(major) if major.isdigit() else None


class Agent:
    def __init__(
        self,
        *,
        node_runtimes: NodeRuntimes,
        prober: probe.Prober,
        containerd_node: ContainerdNode,
        metrics: Metrics,
        base_config: Path,
        hulld_config: Path,
        hulld_pid_file: Path,
        host_runs_systemd: bool = False,
        reprobe_interval: float = 300.0,
        runtime_patience: float = 30.0,
    ) -> None:
        """``runtime_patience``: how long a round waits for a runtime that does not answer before reporting so."""
        self.node_runtimes = node_runtimes
        self.prober = prober
        """Through hulld's private socket."""
        self.containerd = containerd_node
        self.host_runs_systemd = host_runs_systemd
        self.reporting = prober
        """The prober of the runtime the last round configured: its runtime's name and version are reported."""
        self.metrics = metrics
        running = tomllib.loads(hulld_config.read_text()) if hulld_config.exists() else None
        # The node image provides hulld's base configuration; a node that keeps containerd has none.
        self.base: dict[str, Any] | None = (
            render.with_cgroup_driver(tomllib.loads(base_config.read_text()), running, host_runs_systemd)
            if base_config.exists()
            else None
        )
        self.base_config = base_config
        self.hulld_config = hulld_config
        self.hulld_pid_file = hulld_pid_file
        self.reprobe_interval = reprobe_interval
        self.runtime_patience = runtime_patience
        self.applied_generation: int | None = None
        self.next_probe = 0.0
        """When the next probe round is due (time.monotonic())."""
        self.retry_delay = FIRST_RETRY
        self.ready = threading.Event()

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
        due = time.monotonic() >= self.next_probe
        if node_runtime.generation == self.applied_generation and not due:
            return
        handlers = node_runtime.spec.handlers
        kubelet_runtime = self.node_runtimes.kubelet_runtime()
        major = containerd_major(kubelet_runtime) if kubelet_runtime.startswith(CONTAINERD_RUNTIME) else None
        if kubelet_runtime.startswith(HULLD_RUNTIME):
            results = self._hulld_round(handlers)
        elif major is not None and major >= 2:
            results = self._containerd_round(handlers)
        else:
            # A runtime kubehull does not configure would not know the handlers: pods would fail "no runtime for
            # handler".
            message = (
                f"this node's kubelet uses {kubelet_runtime[:200] or 'a runtime it has not reported'};"
                " kubehull's handlers need hulld or containerd 2.0 or later as the node's CRI runtime"
            )
            results = {handler.name: probe.Result(False, "UnsupportedRuntime", message, 0.0) for handler in handlers}
        if all(result.ready for result in results.values()):
            self.next_probe, self.retry_delay = time.monotonic() + self.reprobe_interval, FIRST_RETRY
        else:
            self.next_probe = time.monotonic() + self.retry_delay
            self.retry_delay = min(self.retry_delay * 2, self.reprobe_interval)
        self._report(node_runtime, results)
        self.applied_generation = node_runtime.generation

    def _sweep(self, prober: probe.Prober) -> None:
        """Remove the probe pods an earlier probe left through ``prober``: an earlier agent killed in the middle
        of one, or a runtime that restarted in the middle of one (its RunPodSandbox never answered, so the pod's
        ID never reached this agent). Every round: a listing of the agent's own pods costs little."""
        try:
            removed = prober.remove_leftovers()
        except grpc.RpcError as error:  # the runtime is not there yet: the next round tries again
            logger.warning("cannot look for leftover probe pods yet: %s", error.code().name)
            return
        if removed:
            logger.info("removed %d probe pods an earlier probe left", removed)

    def _hulld_round(self, handlers: list[HandlerConfig]) -> dict[str, probe.Result]:
        self.reporting = self.prober
        if self.base is None:
            message = f"hulld's base configuration {self.base_config} is missing on this node (its image provides it)"
            return {handler.name: probe.Result(False, "NotConfigured", message, 0.0) for handler in handlers}
        self._sweep(self.prober)
        excluded = {h.name: problem for h in handlers if (problem := self.prober.binary_problem(h)) is not None}
        self._apply(
            render.render(self.base, handlers, excluded, self._running_handlers()),
            {h.name for h in handlers if h.name not in excluded},
        )
        return {handler.name: self.prober.probe(handler) for handler in handlers}

    def _containerd_round(self, handlers: list[HandlerConfig]) -> dict[str, probe.Result]:
        node = self.containerd
        self.reporting = node.prober
        self._sweep(node.prober)
        excluded = {
            h.name: problem
            for h in handlers
            if (problem := node.prober.binary_problem(h) or node.prober.path_problem(containerd.shim_binary(h)))
        }
        systemd_cgroup = self._containerd_driver(node.prober)
        if systemd_cgroup is None:
            message = (
                f"containerd did not answer RuntimeConfig for {self.runtime_patience:.0f}s: its cgroup driver is"
                " unknown, so its drop-in is left as it is"
            )
            return {h.name: probe.Result(False, "RuntimeNotAnswering", message, 0.0) for h in handlers}
        path = node.dropin.path
        text = containerd.render(
            handlers, excluded, containerd.runtimes_in(node.dropin.current()), path, systemd_cgroup
        )
        rendered = containerd.runtimes_in(text)
        side_files = {
            containerd.runsc_config_path(path, h.name): containerd.runsc_config(h, systemd_cgroup)
            for h in handlers
            if h.engine == Engine.GVISOR and h.name not in excluded
        }
        # An excluded handler keeps its running entry (render), and that entry its gVisor configuration.
        side_files |= node.dropin.side_files(rendered.keys() & excluded.keys())
        wanted = set(rendered)
        try:
            if node.dropin.apply(text, side_files, lambda: not self._lacks(node.prober, wanted)):
                self.metrics.renders.inc()
                self._wait_serving(node.prober, wanted, "containerd")
        except containerd.ContainerdError as error:
            self.metrics.reload_failures.inc()
            return {h.name: probe.Result(False, "RestartFailed", str(error)[:4000], 0.0) for h in handlers}
        results = {}
        for handler in handlers:
            if handler.name in excluded:
                results[handler.name] = probe.Result(False, "BinaryNotFound", excluded[handler.name], 0.0)
                continue
            if not self._serves(node.prober, {handler.name}):
                results[handler.name] = probe.Result(
                    False,
                    "NotLoaded",
                    f"containerd does not list handler {handler.name} after loading {path}: does its configuration"
                    f" import {path.parent}/*.toml (containerd 2.x's default does)?",
                    0.0,
                )
                continue
            result = node.prober.probe(handler)
            if not result.ready and result.reason == "ProbeFailed":
                # The kubelet stops pods it does not know, a probe's too, if its housekeeping comes by
                # meanwhile: a probe that lost that race is not a broken handler.
                result = node.prober.probe(handler)
            results[handler.name] = result
        return results

    def _running_handlers(self) -> dict[str, Any]:
        try:
            handlers: dict[str, Any] = tomllib.loads(self.hulld_config.read_text()).get("handlers", {})
            return handlers
        except (FileNotFoundError, tomllib.TOMLDecodeError):
            return {}

    def _containerd_driver(self, prober: probe.Prober) -> bool | None:
        """Whether containerd puts containers in systemd's cgroups, asked again while it does not answer (busy,
        restarting) for up to ``runtime_patience`` seconds; None after. Never guessed: a guess that is wrong
        renders another drop-in, and containerd is restarted for it."""
        deadline = time.monotonic() + self.runtime_patience
        while (answer := prober.systemd_cgroup(default=self.host_runs_systemd)) is None:
            if time.monotonic() > deadline:
                logger.warning("containerd does not answer RuntimeConfig; its drop-in is left as it is")
                return None
            time.sleep(1)
        return answer

    @staticmethod
    def _listed(prober: probe.Prober) -> set[str] | None:
        """The handlers the runtime behind ``prober`` reports; None while it does not answer (busy, restarting)."""
        try:
            return set(prober.runtime_status()[2])
        except Exception:
            return None

    def _serves(self, prober: probe.Prober, wanted: set[str]) -> bool:
        """Whether the runtime answers and reports every handler in ``wanted``."""
        listed = self._listed(prober)
        return listed is not None and wanted <= listed

    def _lacks(self, prober: probe.Prober, wanted: set[str]) -> bool:
        """Whether the runtime answers and does not report every handler in ``wanted``. One that does not answer
        may lack nothing: restarting it again would not tell, and would interrupt it."""
        listed = self._listed(prober)
        return listed is not None and not wanted <= listed

    def _wait_serving(self, prober: probe.Prober, wanted: set[str], runtime: str) -> None:
        """Until the runtime (reloaded, restarted) lists ``wanted``; a reload failure after 20 s."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._serves(prober, wanted):
                logger.info("%s serves handlers %s", runtime, ", ".join(sorted(wanted)) or "(none)")
                return
            time.sleep(0.1)
        logger.error("%s did not take the new configuration (handlers %s)", runtime, sorted(wanted))
        self.metrics.reload_failures.inc()

    def _apply(self, text: str, wanted: set[str]) -> None:
        """Write hulld's configuration and have hulld reload it — again if an earlier reload did not take (a
        signal lost while hulld started, say): the file alone proves nothing."""
        try:
            unchanged = self.hulld_config.read_text() == text
        except FileNotFoundError:
            unchanged = False
        if unchanged and self._serves(self.prober, wanted):
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
        self._wait_serving(self.prober, wanted, "hulld")

    @staticmethod
    def _runtime(prober: probe.Prober) -> tuple[str, bool, str]:
        """(name, ready, version) of the runtime behind ``prober``; not ready if it does not answer."""
        try:
            ready, version, _ = prober.runtime_status()
            return prober.runtime_name(), ready, version
        except Exception:
            return "", False, ""

    def _report(self, node_runtime: NodeRuntime, results: dict[str, probe.Result]) -> None:
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        runtime, ready, version = self._runtime(self.reporting)
        hulld = (runtime, ready, version) if self.reporting is self.prober else self._runtime(self.prober)
        _, hulld_ready, hulld_version = hulld
        self.metrics.hulld_up.set(1 if hulld_ready else 0)
        self.metrics.hulld_info.clear()
        if hulld_version:
            self.metrics.hulld_info.labels(hulld_version).set(1)
        self.metrics.handler_ready.clear()
        handlers = []
        configs = {handler.name: handler for handler in node_runtime.spec.handlers}
        for name, result in sorted(results.items()):
            self.metrics.handler_ready.labels(name).set(1 if result.ready else 0)
            self.metrics.probe_duration.labels(name, "ready" if result.ready else result.reason).observe(
                result.duration
            )
            report = HandlerStatus(
                name=name,
                config_digest=configs[name].runtime_digest(),
                ready=result.ready,
                reason=result.reason,
                message=result.message,
                binary_version=result.binary_version,
                last_probe_time=now,
                probe_duration_seconds=round(result.duration, 3),
            )
            handlers.append(report.wire())
            if not result.ready:
                logger.warning("handler %s not ready: %s: %s", name, result.reason, result.message)
        status = {
            "observedGeneration": node_runtime.generation,
            "runtime": {"name": runtime or "unknown", "version": version, "ready": ready},
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
