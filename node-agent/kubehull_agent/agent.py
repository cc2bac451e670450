"""The node loop: this node's NodeHandlers → the node's runtime configuration → reload → probes → their statuses.

The runtime configured is the one the node's kubelet reports using: hulld (its configuration file, reloaded
with SIGHUP), or containerd 2.x (a drop-in, containerd restarted when it changed: containerd.py); on any other,
every handler is reported ``UnsupportedRuntime``.

A thread lists and watches the node's NodeHandlers (``Watched``). The loop runs a round when the configuration
they ask for changes (a spec, a NodeHandler created or being deleted; not the statuses the agent writes itself),
SETTLE seconds later so that a burst of changes (a rollout, profiles removed together) takes one reload or one
restart; and every ``reprobe_interval`` so that a handler that breaks later is reported. A round that leaves
something undone (a handler not ready, a status or finalizer not written) is repeated sooner, after 5 s and then
twice as long each time up to that interval: a failure that passes (hulld restarting, a runtime being
installed) is not reported for minutes.

A NodeHandler being deleted is a handler to take off the node: the round renders the configuration without it,
and once the runtime runs that configuration, takes the agent's finalizer off it, so that the object goes only
when the handler has gone.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import random
import signal
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping, Set
from pathlib import Path
from typing import Any

import grpc
import pydantic
from kubernetes.client.exceptions import ApiException

from hulld.atomic import write_atomically
from kubehull_agent import containerd, probe, render
from kubehull_agent.kube import ExpiredError, NodeHandlers
from kubehull_agent.metrics import Metrics
from kubehull_api.engines import Engine
from kubehull_api.nodehandler import FINALIZER, HandlerConfig, NodeHandler, NodeHandlerStatus, RuntimeInfo

logger = logging.getLogger(__name__)

HULLD_RUNTIME = "hulld://"
"""How a kubelet that talks to hulld reports its runtime (hulld's CRI Version: runtime name "hulld")."""
CONTAINERD_RUNTIME = "containerd://"
FIRST_RETRY = 5.0
"""Seconds before a round that left something undone is repeated (doubling up to the reprobe interval)."""
SETTLE = 1.0
"""Seconds a round waits after a change for the changes that come with it."""
WATCH_SECONDS = (300, 600)
"""How long one watch lasts (a random span, as client-go's, so that the nodes' watches do not all end at once)."""


def deleting(handler: NodeHandler) -> bool:
    return bool(handler.metadata.get("deletionTimestamp"))


def held(handler: NodeHandler) -> bool:
    """Whether the agent's finalizer still holds ``handler``."""
    return FINALIZER in handler.metadata.get("finalizers", [])


def configuration(known: Mapping[str, NodeHandler]) -> dict[str, tuple[str, int]]:
    """What the node's configuration depends on: each desired NodeHandler's uid and generation (a new spec is a
    new generation; a status is not)."""
    return {
        name: (handler.metadata.get("uid", ""), handler.metadata.get("generation", 0))
        for name, handler in known.items()
        if not deleting(handler)
    }


class Watched:
    """This node's NodeHandlers as the API server has them, kept by ``run`` (in a thread): a list, then a watch
    from its version, resumed from the last version seen when it ends; a new list on 410 Gone, replacing what is
    known (which drops what was deleted while no watch was open)."""

    def __init__(self, node_handlers: NodeHandlers) -> None:
        self.node_handlers = node_handlers
        self.changed = threading.Event()
        """Set when the configuration the NodeHandlers ask for changed (``configuration``)."""
        self._known: dict[str, NodeHandler] | None = None
        self._lock = threading.Lock()
        self._version: str | None = None
        """The resourceVersion to watch from: the last list's, then each event's (None: list first)."""

    def current(self) -> list[NodeHandler] | None:
        """The node's NodeHandlers; None before the first list (when not even "none" is known)."""
        with self._lock:
            return None if self._known is None else list(self._known.values())

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self._version is None:
                    self._version = self._list()
                self._watch(self._version, stop)
            except ExpiredError:
                logger.info("the watch of this node's NodeHandlers expired; listing them again")
                self._version = None
            except Exception:
                logger.exception("watching this node's NodeHandlers failed; resuming")
                stop.wait(2)

    def _list(self) -> str:
        """Replace what is known with a list; the version it was read at."""
        items, version = self.node_handlers.list()
        parsed = (self._parse(item) for item in items)
        self._store({name: handler for name, handler in parsed if handler is not None})
        return version

    def _watch(self, version: str, stop: threading.Event) -> None:
        """Take in the events of one watch from ``version``, advancing ``self._version`` with each (so that a
        watch that breaks resumes where it broke)."""
        for event in self.node_handlers.watch(version, random.randint(*WATCH_SECONDS)):  # noqa: S311
            body = event["object"]
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                name, handler = self._parse(body)
                with self._lock:
                    known = dict(self._known or {})
                known.pop(name, None)
                if handler is not None and event["type"] != "DELETED":
                    known[name] = handler
                self._store(known)
            self._version = str(body["metadata"]["resourceVersion"])  # bookmarks too
            if stop.is_set():
                return

    @staticmethod
    def _parse(body: Mapping[str, Any]) -> tuple[str, NodeHandler | None]:
        name = str(body["metadata"]["name"])
        try:
            return name, NodeHandler.model_validate(body)
        except pydantic.ValidationError as error:
            logger.warning("NodeHandler %s is not one the agent can read; left out: %s", name, error)
            return name, None

    def _store(self, known: dict[str, NodeHandler]) -> None:
        with self._lock:
            before, self._known = self._known, known
        if before is None or configuration(before) != configuration(known):
            self.changed.set()


@dataclasses.dataclass(frozen=True)
class ContainerdNode:
    """How the agent configures and probes a node's containerd."""

    dropin: containerd.DropIn
    prober: probe.Prober
    """Through containerd's CRI socket."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What configuring the node's runtime came to."""

    results: dict[str, probe.Result]
    """Each desired handler's, by name."""
    applied: bool
    """Whether the runtime runs the configuration rendered: leaving handlers are off the node."""


def containerd_major(kubelet_runtime: str) -> int | None:
    """containerd's major version from the kubelet's ``containerd://v2.4.2`` (None if it says none)."""
    version = kubelet_runtime.removeprefix(CONTAINERD_RUNTIME).lstrip("v")
    major = version.split(".", 1)[0]
    return int(major) if major.isdigit() else None


def status_of(handler: NodeHandler, result: probe.Result, runtime: RuntimeInfo) -> NodeHandlerStatus:
    """What ``handler``'s status says after ``result``: its lastTransitionTime kept while ready and reason stay."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    status = NodeHandlerStatus(
        observed_generation=handler.metadata.get("generation"),
        config_digest=handler.spec.handler.runtime_digest(),
        ready=result.ready,
        reason=result.reason,
        message=result.message,
        binary_version=result.binary_version,
        runtime=runtime,
        last_transition_time=now,
    )
    before = handler.status
    if before is not None and (before.ready, before.reason) == (status.ready, status.reason):
        status = status.model_copy(update={"last_transition_time": before.last_transition_time or now})
    return status


class Agent:
    def __init__(
        self,
        *,
        node_handlers: NodeHandlers,
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
        self.node_handlers = node_handlers
        self.watched = Watched(node_handlers)
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
        self.next_round = 0.0
        """When the next round is due without a change (time.monotonic())."""
        self.retry_delay = FIRST_RETRY
        self.ready = threading.Event()
        """Set once a round has run: the node's NodeHandlers have their statuses."""

    def run(self, stop: threading.Event) -> None:
        threading.Thread(target=self.watched.run, args=(stop,), name="watch", daemon=True).start()
        while not stop.is_set():
            self.watched.changed.wait(max(0.0, self.next_round - time.monotonic()))
            if stop.wait(SETTLE):
                return
            self.watched.changed.clear()
            known = self.watched.current()
            if known is None:  # not listed yet: a round now would take every handler off the node
                continue
            settled = False
            try:
                settled = self.round(known)
            except Exception:
                logger.exception("the round failed")
            self._schedule(settled)

    def round(self, known: Iterable[NodeHandler]) -> bool:
        """Configure the node for ``known``, report on each desired handler, release each leaving one; whether
        nothing is left to do again sooner than the next reprobe."""
        desired = sorted((h for h in known if not deleting(h)), key=lambda h: h.spec.handler.name)
        leaving = [h for h in known if deleting(h) and held(h)]
        outcome = self._configure([h.spec.handler for h in desired], {h.spec.handler.name for h in leaving})
        written = self._report(desired, outcome.results)
        released = not leaving or (outcome.applied and self._release(leaving))
        self.ready.set()
        return written and released and all(result.ready for result in outcome.results.values())

    def _schedule(self, settled: bool) -> None:
        if settled:
            self.next_round, self.retry_delay = time.monotonic() + self.reprobe_interval, FIRST_RETRY
        else:
            self.next_round = time.monotonic() + self.retry_delay
            self.retry_delay = min(self.retry_delay * 2, self.reprobe_interval)

    def _configure(self, handlers: list[HandlerConfig], leaving: Set[str]) -> Outcome:
        """Have the node's runtime run ``handlers``, and not ``leaving``, and probe each of ``handlers``."""
        kubelet_runtime = self.node_handlers.kubelet_runtime()
        major = containerd_major(kubelet_runtime) if kubelet_runtime.startswith(CONTAINERD_RUNTIME) else None
        if kubelet_runtime.startswith(HULLD_RUNTIME):
            return self._hulld_round(handlers, leaving)
        if major is not None and major >= 2:
            return self._containerd_round(handlers)
        # A runtime kubehull does not configure would not know the handlers: pods would fail "no runtime for
        # handler". Nothing of kubehull's runs under it, so nothing has to leave it.
        message = (
            f"this node's kubelet uses {kubelet_runtime[:200] or 'a runtime it has not reported'};"
            " kubehull's handlers need hulld or containerd 2.0 or later as the node's CRI runtime"
        )
        return self._failed(handlers, "UnsupportedRuntime", message, applied=True)

    @staticmethod
    def _failed(handlers: Iterable[HandlerConfig], reason: str, message: str, *, applied: bool = False) -> Outcome:
        """Every handler not ready for one reason (nothing was probed)."""
        return Outcome({h.name: probe.Result(False, reason, message, 0.0) for h in handlers}, applied)

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

    def _hulld_round(self, handlers: list[HandlerConfig], leaving: Set[str]) -> Outcome:
        self.reporting = self.prober
        if self.base is None:
            message = f"hulld's base configuration {self.base_config} is missing on this node (its image provides it)"
            return self._failed(handlers, "NotConfigured", message)
        self._sweep(self.prober)
        excluded = {h.name: problem for h in handlers if (problem := self.prober.binary_problem(h)) is not None}
        applied = self._apply(
            render.render(self.base, handlers, excluded, self._running_handlers()),
            {h.name for h in handlers if h.name not in excluded},
            # A handler hulld's base configuration has stays when its NodeHandler leaves: it was never kubehull's.
            leaving - self.base.get("handlers", {}).keys(),
        )
        return Outcome({handler.name: self.prober.probe(handler) for handler in handlers}, applied)

    def _containerd_round(self, handlers: list[HandlerConfig]) -> Outcome:
        """Leaving handlers are simply not rendered. Whether containerd still lists them is no sign: one its own
        configuration defines (``runc``) stays listed; the drop-in without them, containerd restarted, is."""
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
            return self._failed(handlers, "RuntimeNotAnswering", message)
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
                self._wait_serving(node.prober, wanted, set(), "containerd")
        except containerd.ContainerdError as error:
            self.metrics.reload_failures.inc()
            return self._failed(handlers, "RestartFailed", str(error)[:4000])
        results = {}
        for handler in handlers:
            if handler.name in excluded:
                results[handler.name] = probe.Result(False, "BinaryNotFound", excluded[handler.name], 0.0)
                continue
            if not self._runs(node.prober, {handler.name}):
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
        return Outcome(results, applied=True)

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

    def _runs(self, prober: probe.Prober, wanted: Set[str], gone: Set[str] = frozenset()) -> bool:
        """Whether the runtime answers, reports every handler in ``wanted`` and none in ``gone``."""
        listed = self._listed(prober)
        return listed is not None and wanted <= listed and not listed & gone

    def _lacks(self, prober: probe.Prober, wanted: set[str]) -> bool:
        """Whether the runtime answers and does not report every handler in ``wanted``. One that does not answer
        may lack nothing: restarting it again would not tell, and would interrupt it."""
        listed = self._listed(prober)
        return listed is not None and not wanted <= listed

    def _wait_serving(self, prober: probe.Prober, wanted: Set[str], gone: Set[str], runtime: str) -> bool:
        """Until the runtime (reloaded, restarted) reports ``wanted`` and not ``gone``; a reload failure after
        20 s. Whether it came to that."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._runs(prober, wanted, gone):
                logger.info("%s serves handlers %s", runtime, ", ".join(sorted(wanted)) or "(none)")
                return True
            time.sleep(0.1)
        logger.error(
            "%s did not take the new configuration (handlers %s, without %s)", runtime, sorted(wanted), sorted(gone)
        )
        self.metrics.reload_failures.inc()
        return False

    def _apply(self, text: str, wanted: Set[str], gone: Set[str]) -> bool:
        """Write hulld's configuration and have hulld reload it — again if an earlier reload did not take (a
        signal lost while hulld started, say): the file alone proves nothing. Whether hulld runs it: reports
        ``wanted``, and none of ``gone``."""
        try:
            unchanged = self.hulld_config.read_text() == text
        except FileNotFoundError:
            unchanged = False
        if unchanged and self._runs(self.prober, wanted, gone):
            return True
        if not unchanged:
            write_atomically(self.hulld_config, text)
            self.metrics.renders.inc()
        try:
            os.kill(int(self.hulld_pid_file.read_text()), signal.SIGHUP)
        except (OSError, ValueError) as error:
            logger.error("cannot signal hulld to reload: %s", error)
            self.metrics.reload_failures.inc()
            return False
        return self._wait_serving(self.prober, wanted, gone, "hulld")

    @staticmethod
    def _runtime(prober: probe.Prober) -> tuple[str, bool, str]:
        """(name, ready, version) of the runtime behind ``prober``; not ready if it does not answer."""
        try:
            ready, version, _ = prober.runtime_status()
            return prober.runtime_name(), ready, version
        except Exception:
            return "", False, ""

    def _report(self, desired: list[NodeHandler], results: dict[str, probe.Result]) -> bool:
        """Metrics, and each desired NodeHandler's status where it changed; whether every status is written."""
        runtime, ready, version = self._runtime(self.reporting)
        _, hulld_ready, hulld_version = (
            (runtime, ready, version) if self.reporting is self.prober else self._runtime(self.prober)
        )
        self.metrics.hulld_up.set(1 if hulld_ready else 0)
        self.metrics.hulld_info.clear()
        if hulld_version:
            self.metrics.hulld_info.labels(hulld_version).set(1)
        self.metrics.handler_ready.clear()
        for name, result in sorted(results.items()):
            self.metrics.handler_ready.labels(name).set(1 if result.ready else 0)
            self.metrics.probe_duration.labels(name, "ready" if result.ready else result.reason).observe(
                result.duration
            )
            if not result.ready:
                logger.warning("handler %s not ready: %s: %s", name, result.reason, result.message)
        info = RuntimeInfo(name=runtime or "unknown", version=version)
        # Every status is tried, whichever fails.
        return all([self._write_status(h, status_of(h, results[h.spec.handler.name], info)) for h in desired])

    def _write_status(self, handler: NodeHandler, status: NodeHandlerStatus) -> bool:
        """Write ``status`` unless ``handler`` has it already; whether it has it now."""
        if status == handler.status:
            return True
        name = handler.metadata["name"]
        try:
            self.node_handlers.write_status(name, status.model_dump(mode="json", by_alias=True, exclude_none=True))
        except Exception as error:
            if isinstance(error, ApiException) and error.status == 404:  # deleted meanwhile: nobody to tell
                return True
            logger.error("cannot write the status of NodeHandler %s: %s", name, error)
            self.metrics.status_writes.labels("error").inc()
            return False
        self.metrics.status_writes.labels("ok").inc()
        return True

    def _release(self, leaving: list[NodeHandler]) -> bool:
        """Take the agent's finalizer off each of ``leaving``, whose handlers are off the node; whether all are."""
        released = True
        for handler in leaving:
            metadata = handler.metadata
            try:
                self.node_handlers.release(metadata["name"], metadata["resourceVersion"], metadata["finalizers"])
            except Exception:
                logger.exception("cannot release NodeHandler %s", metadata["name"])
                released = False
                continue
            logger.info(
                "handler %s is off this node: released NodeHandler %s", handler.spec.handler.name, metadata["name"]
            )
        return released
