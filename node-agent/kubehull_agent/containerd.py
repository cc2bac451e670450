"""kubehull's handlers on a node that keeps containerd (2.x) as its CRI: one drop-in file, never the main one.

containerd 2.x merges every file its ``imports`` name into its configuration key by key (1.x replaced whole
plugin sections, which is why kubehull configures 2.x only), and its default configuration imports
``/etc/containerd/conf.d/*.toml``. The agent owns one file there: a ``runtimes`` entry per handler, in
configuration version 3, as containerd's CRI plugin reads it. containerd reads its configuration only when it
starts, so a changed file means a restart; an unchanged one (the common case: every reprobe renders the same
text) means none. Running pods are untouched by the restart: each pod's shim outlives the daemon.

The rendering is pure (``render``); ``DropIn`` writes the file and restarts containerd through the host.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import subprocess
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import tomli_w

from hulld.atomic import write_atomically
from kubehull_agent.host import Host, host_lock
from kubehull_api.engines import Engine, RuntimeType
from kubehull_api.noderuntime import HandlerConfig

logger = logging.getLogger(__name__)

RUNTIME_PLUGIN = "io.containerd.cri.v1.runtime"
RUNSC_SHIM = "containerd-shim-runsc-v1"
"""gVisor's shim, looked for beside runsc (gVisor installs both into one directory)."""
HEADER = "# Written by kubehull's node agent from this node's NodeRuntime; edits are overwritten.\n"


class ContainerdError(RuntimeError):
    pass


def shim_binary(handler: HandlerConfig) -> str:
    """The shim binary containerd starts for ``handler``: gVisor's beside runsc, or the handler's own (vm)."""
    if handler.engine == Engine.GVISOR:
        return str(PurePosixPath(handler.path).parent / RUNSC_SHIM)
    return handler.path


def side_directory(dropin: Path) -> Path:
    """Where the agent keeps the files its drop-in names (``kubehull.d`` beside ``kubehull.toml``): a directory,
    so that containerd's ``conf.d/*.toml`` import does not take them for drop-ins."""
    return dropin.with_suffix(".d")


def runsc_config_path(dropin: Path, handler: str) -> str:
    """Where the agent writes gVisor's shim configuration for ``handler``."""
    return str(side_directory(dropin) / f"{handler}-runsc.toml")


def runsc_config(handler: HandlerConfig, systemd_cgroup: bool) -> str:
    """gVisor's shim configuration: which runsc, and the handler's options as runsc flags."""
    flags = {"debug-log" if name == "debugLog" else name: value for name, value in handler.options.items()}
    if systemd_cgroup:
        flags["systemd-cgroup"] = "true"
    document: dict[str, Any] = {"binary_name": handler.path}
    if flags:
        document["runsc_config"] = dict(sorted(flags.items()))
    return HEADER + tomli_w.dumps(document)


def runtime_entry(handler: HandlerConfig, dropin: Path, systemd_cgroup: bool) -> dict[str, Any]:
    """``handler`` as a containerd CRI runtime: runc-like OCI runtimes through containerd's runc shim, gVisor
    through its own shim, a vm handler (Kata) through its shim binary."""
    entry: dict[str, Any]
    if handler.engine == Engine.GVISOR:
        entry = {
            "runtime_type": "io.containerd.runsc.v1",
            "runtime_path": shim_binary(handler),
            "options": {
                "TypeUrl": "io.containerd.runsc.v1.options",
                "ConfigPath": runsc_config_path(dropin, handler.name),
            },
        }
    elif handler.runtime_type == RuntimeType.VM:
        entry = {"runtime_type": "io.containerd.kata.v2", "runtime_path": handler.path}
        if handler.config_path:
            entry["options"] = {"ConfigPath": handler.config_path}
    else:
        systemd = handler.options.get("systemdCgroup", "true" if systemd_cgroup else "false") == "true"
        entry = {
            "runtime_type": "io.containerd.runc.v2",
            "options": {"BinaryName": handler.path, "SystemdCgroup": systemd},
        }
    if handler.privileged_without_host_devices:
        entry["privileged_without_host_devices"] = True
    if handler.allowed_annotations:
        entry["pod_annotations"] = list(handler.allowed_annotations)
    return entry


def render(
    handlers: Iterable[HandlerConfig],
    excluded: Mapping[str, str],
    running: Mapping[str, Any],
    dropin: Path,
    systemd_cgroup: bool,
) -> str:
    """The drop-in for ``handlers``. ``excluded``: handler name → why it may not be applied (its entry from
    ``running``, the drop-in's runtimes now, is kept if it had one: a bad desired configuration never replaces
    a good running one)."""
    runtimes: dict[str, Any] = {}
    for handler in handlers:
        if handler.name in excluded:
            if handler.name in running:
                runtimes[handler.name] = running[handler.name]
            continue
        runtimes[handler.name] = runtime_entry(handler, dropin, systemd_cgroup)
    if not runtimes:
        return ""
    plugins = {RUNTIME_PLUGIN: {"containerd": {"runtimes": dict(sorted(runtimes.items()))}}}
    return HEADER + tomli_w.dumps({"version": 3, "plugins": plugins})


def runtimes_in(text: str) -> dict[str, Any]:
    """The runtimes a drop-in configures (none for an empty or unreadable one)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}
    runtimes: dict[str, Any] = document.get("plugins", {}).get(RUNTIME_PLUGIN, {}).get("containerd", {})
    return dict(runtimes.get("runtimes", {}))


class DropIn:
    """The agent's drop-in on the host, and containerd restarted when, and only when, that matters.

    ``path`` and the gVisor configurations beside it are host paths; ``restart`` runs in the host's
    namespaces. Writes and restarts happen under ``lock`` (the agent's host lock), so two agents (an upgrade's
    old and new pod) never restart containerd at once.
    """

    def __init__(self, path: Path, restart: Sequence[str], host: Host, lock: Path) -> None:
        self.path = path
        self.restart_command = list(restart)
        self.host = host
        self.lock = lock
        self.restarted_for: str | None = None
        """The drop-in text containerd was last restarted for by this agent."""

    def current(self) -> str:
        try:
            return self.host.path(self.path).read_text()
        except FileNotFoundError:
            return ""

    def apply(self, text: str, side_files: Mapping[str, str], loaded: Callable[[], bool]) -> bool:
        """Make the drop-in say ``text`` (empty: no drop-in) with ``side_files`` (host path → content, the
        gVisor configurations) beside it, and restart containerd if anything changed — or if containerd answers
        without what the file says (``loaded`` false: an earlier restart failed, or another agent wrote the
        file), once per text: a containerd that does not import the drop-in is not restarted again and again.
        Whether it restarted."""
        with host_lock(self.lock):
            changed = self._write_side_files(side_files)
            if text != self.current():
                changed = True
                target = self.host.path(self.path)
                if text:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_atomically(target, text)
                else:
                    target.unlink(missing_ok=True)
            if not changed and (self.restarted_for == text or loaded()):
                return False
            self._restart()
            self.restarted_for = text
            return True

    def side_files(self, handlers: Iterable[str]) -> dict[str, str]:
        """The gVisor configurations the drop-in has now for ``handlers`` (host path → content), those that exist."""
        found = {}
        for handler in handlers:
            where = runsc_config_path(self.path, handler)
            with contextlib.suppress(FileNotFoundError):
                found[where] = self.host.path(where).read_text()
        return found

    def _write_side_files(self, side_files: Mapping[str, str]) -> bool:
        changed = False
        wanted = {self.host.path(path): content for path, content in side_files.items()}
        directory = self.host.path(side_directory(self.path))
        for stale in directory.glob("*-runsc.toml"):
            if stale not in wanted:
                stale.unlink()
                changed = True
        if not wanted and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
        for target, content in wanted.items():
            try:
                if target.read_text() == content:
                    continue
            except FileNotFoundError:
                target.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(target, content)
            changed = True
        return changed

    def _restart(self) -> None:
        command = self.host.command(self.restart_command)
        logger.info("restarting containerd for its new configuration (%s)", shlex.join(self.restart_command))
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ContainerdError(
                f"cannot restart containerd with {shlex.join(self.restart_command)}: {error}"
            ) from error
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()[-500:]
            raise ContainerdError(
                f"restarting containerd ({shlex.join(self.restart_command)}) failed"
                f" with exit code {result.returncode}: {output}"
            )
