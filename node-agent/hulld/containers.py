"""Containers: create (rootfs, OCI spec, the runtime under conmon), start, stop, remove, inspect, exec.

Per container, under <storage.root>/containers/<id>/: ``bundle/config.json``, ``rootfs`` (overlayfs of the
image's layers), ``upper`` and ``work`` (its writable layer), ``persist`` (conmon's own files). Exit codes land
in <storage.state>/exits/<id>. The record's status is refreshed from those files whenever it is read, so a
container that exited while nobody was looking (hulld down included) reports its real exit code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hulld import errors, validation
from hulld.config import Config
from hulld.images.service import ImageService
from hulld.node import cgroups, mounts, processes
from hulld.runtimes.base import (
    ContainerPaths,
    ContainerStdio,
    ExecResult,
    ExitStatus,
    Handler,
    StdioSession,
    TerminalSize,
)
from hulld.sandboxes import Sandboxes
from hulld.spec import container as container_spec
from hulld.spec import users
from hulld.store.records import ContainerRecord, ContainerStatus
from hulld.store.table import Table

logger = logging.getLogger(__name__)

SIGKILL_EXIT = 128 + signal.SIGKILL

SIGNALS = {name: int(getattr(signal, name)) for name in dir(signal) if name.startswith("SIG") and "_" not in name}


def container_name(metadata: dict[str, Any], sandbox_name: str) -> str:
    return f"{metadata.get('name', '')}_{sandbox_name}_{metadata.get('attempt', 0)}"


@dataclasses.dataclass(frozen=True)
class Event:
    kind: str
    """CREATED, STARTED, STOPPED or DELETED."""
    record: ContainerRecord
    at: int


class Events:
    """Container lifecycle events for GetContainerEvents subscribers.

    While anyone listens, a watcher refreshes running containers twice a second, so an exit is announced
    without waiting for some client to ask about that container."""

    def __init__(self, containers: Containers) -> None:
        self.containers = containers
        self._subscribers: list[queue.Queue[Event]] = []
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def publish(self, kind: str, record: ContainerRecord) -> None:
        event = Event(kind=kind, record=record, at=time.time_ns())
        with self._lock:
            for subscriber in self._subscribers:
                subscriber.put(event)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[queue.Queue[Event]]:
        mailbox: queue.Queue[Event] = queue.Queue(maxsize=10000)
        with self._lock:
            self._subscribers.append(mailbox)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="container-exits", daemon=True)
                self._watcher.start()
        try:
            yield mailbox
        finally:
            with self._lock:
                self._subscribers.remove(mailbox)

    def _watch(self) -> None:
        while True:
            time.sleep(0.5)
            with self._lock:
                if not self._subscribers:
                    self._watcher = None
                    return
            for record in self.containers.records.list(lambda r: r.status.state == "RUNNING"):
                with contextlib.suppress(Exception):
                    self.containers.refresh(record)


@dataclasses.dataclass(frozen=True)
class Readings:
    """What the CRI metrics report of a running container, read at one moment."""

    usage: cgroups.Usage
    details: cgroups.Details
    open_files: processes.OpenFiles | None
    """None when the container's processes are not the host's to see."""
    writable_bytes: int
    filesystem: os.statvfs_result
    """Of the filesystem holding the writable layers."""


class Containers:
    def __init__(
        self, config: Config, sandboxes: Sandboxes, images: ImageService, on_change: Callable[[], None] = lambda: None
    ) -> None:
        self.config = config
        self.sandboxes = sandboxes
        self.images = images
        self.on_change = on_change
        self.records = Table(config.storage.root / "records" / "containers", ContainerRecord)
        self.files = config.storage.root / "containers"
        self.exits = config.storage.state / "exits"
        self.events = Events(self)
        self._lock = threading.Lock()
        self._starting: set[str] = set()
        """Containers between StartContainer's runtime call and their RUNNING status."""

    def reconfigure(self, config: Config) -> None:
        self.config = config

    # --- helpers ----------------------------------------------------------------------------------------------

    def paths(self, record: ContainerRecord) -> ContainerPaths:
        directory = self.files / record.id
        return ContainerPaths(
            bundle=directory / "bundle",
            log=Path(record.log_path) if record.log_path else None,
            exits=self.exits,
            persist=directory / "persist",
        )

    def handler(self, name: str) -> Handler:
        return self.sandboxes.handlers.get(name)

    def refresh(self, record: ContainerRecord) -> ContainerRecord:
        """Bring a created or running container's status up to date with what its monitor recorded."""
        with self._lock:
            if record.id in self._starting:
                return record
        if record.status.state == "EXITED":
            return self._late_oom_kill(record)
        if record.status.state not in ("CREATED", "RUNNING"):
            return record
        handler = self.sandboxes.handlers.find(record.handler)
        if handler is None:
            return record
        ended = handler.exit_status(record.id, self.paths(record))
        if ended is None:
            return record
        reason = "OOMKilled" if self._oom_killed(record, ended) else ("Completed" if ended.code == 0 else "Error")

        def exited(current: ContainerStatus) -> ContainerStatus:
            if current.state not in ("CREATED", "RUNNING"):
                return current  # another thread recorded the exit first
            return dataclasses.replace(
                current,
                state="EXITED",
                exit_code=ended.code,
                finished_at=ended.finished_at,
                reason=reason,
                started_at=current.started_at or ended.finished_at,
            )

        try:
            before, after = self.records.update(record.id, exited)
        except errors.NotFound:
            return record  # removed meanwhile
        if after is not before:
            self.on_change()
            self.events.publish("STOPPED", after)
        return after

    def get(self, container_id: str) -> ContainerRecord:
        return self.refresh(self.records.get(container_id))

    def all(self) -> list[ContainerRecord]:
        return [self.refresh(record) for record in self.records.list()]

    # --- CreateContainer --------------------------------------------------------------------------------------

    def create(self, sandbox_id: str, config: dict[str, Any]) -> ContainerRecord:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox.status.state != "READY":
            raise errors.FailedPrecondition(f"sandbox {sandbox.id} is not ready")
        image_name = (config.get("image") or {}).get("image", "")
        image = self.images.status(image_name)
        if image is None:
            raise errors.NotFound(f"image {image_name!r} is not present; pull it first")
        handler = self.handler(sandbox.handler)
        validation.container(config)
        log_file = validation.log_file(sandbox.log_directory, config.get("logPath", ""))
        metadata = config.get("metadata") or {}
        record = ContainerRecord(
            id=secrets.token_hex(32),
            name=container_name(metadata, sandbox.name),
            sandbox_id=sandbox.id,
            metadata=metadata,
            labels=config.get("labels") or {},
            annotations=config.get("annotations") or {},
            image=image_name,
            image_id=image.id,
            handler=sandbox.handler,
            created_at=time.time_ns(),
            log_path=str(log_file or ""),
            mounts=tuple(config.get("mounts") or ()),
            private=sandbox.private,
            stdin=bool(config.get("stdin")),
            stdin_once=bool(config.get("stdinOnce")),
            tty=bool(config.get("tty")),
            status=ContainerStatus(),
        )
        record = self.records.add(record)  # claims the name
        directory = self.files / record.id
        try:
            rootfs = directory / "rootfs"
            layers = [self.images.store.layer_path(layer) for layer in image.layers]
            mounts.mount_overlay(layers, directory / "upper", directory / "work", rootfs)
            security = (config.get("linux") or {}).get("securityContext") or {}
            user = str(security.get("runAsUser", {}).get("value", "")) if "runAsUser" in security else ""
            user = user or security.get("runAsUsername", "") or str(image.config.get("User") or "0")
            group = str(security["runAsGroup"]["value"]) if "runAsGroup" in security else None
            supplemental = tuple(int(g) for g in security.get("supplementalGroups", []))
            identity = users.resolve(rootfs, user, group, supplemental)
            spec = container_spec.build(
                container_spec.Inputs(
                    container_id=record.id,
                    config=config,
                    sandbox=sandbox,
                    sandbox_dir=self.sandboxes.directory(sandbox),
                    handler=self.config.handlers[sandbox.handler],
                    image_config=image.config,
                    rootfs=rootfs,
                    identity=identity,
                    oom_score_adj_floor=processes.own_oom_score_adj(),
                )
            )
            paths = self.paths(record)
            paths.bundle.mkdir(parents=True, exist_ok=True, mode=0o700)
            (paths.bundle / "config.json").write_text(json.dumps(spec))
            stdio = ContainerStdio(stdin=record.stdin, stdin_once=record.stdin_once, tty=record.tty)
            pid = handler.create(record.id, record.name, paths, sandbox.status.infra_id, stdio)
        except BaseException:
            self._discard(record)
            raise
        self.on_change()
        created = self.records.set(record.id, pid=pid)
        self.events.publish("CREATED", created)
        return created

    def _discard(self, record: ContainerRecord) -> None:
        handler = self.sandboxes.handlers.find(record.handler)
        if handler is not None:
            try:
                handler.delete(record.id, self.paths(record))
            except errors.HulldError as error:
                logger.warning("container %s: %s", record.id, error)
        mounts.unmount(self.files / record.id / "rootfs")
        shutil.rmtree(self.files / record.id, ignore_errors=True)
        (self.exits / record.id).unlink(missing_ok=True)
        self.records.remove(record)

    # --- Start, Stop, Remove ----------------------------------------------------------------------------------

    def start(self, container_id: str) -> None:
        record = self.get(container_id)
        if record.status.state != "CREATED":
            raise errors.FailedPrecondition(f"container {record.id} is {record.status.state.lower()}, not created")
        with self._lock:
            self._starting.add(record.id)  # its exit, if quick, is recorded after STARTED, never before
        try:
            started_at = time.time_ns()  # before the call: a quick container may exit before it returns
            sandbox = self.sandboxes.records.find(record.sandbox_id)
            oom_kills = None if sandbox is None else cgroups.pod_oom_kills(sandbox.cgroup)
            self.handler(record.handler).start(record.id, self.paths(record))
            started = self.records.set(
                record.id, state="RUNNING", started_at=started_at, pod_oom_kills_at_start=oom_kills
            )
            self.on_change()
            self.events.publish("STARTED", started)
        finally:
            with self._lock:
                self._starting.discard(record.id)

    def _late_oom_kill(self, record: ContainerRecord) -> ContainerRecord:
        """An exited container's OOM kill that its monitor learnt of after the exit: a shim's OOM watch and its
        reaper race, so its ``/tasks/oom`` event may come after its exit event. As containerd's CRI does, the
        reason of a container that died of SIGKILL turns to OOMKilled when it comes."""
        if record.status.reason != "Error" or record.status.exit_code != SIGKILL_EXIT:
            return record
        handler = self.sandboxes.handlers.find(record.handler)
        ended = None if handler is None else handler.exit_status(record.id, self.paths(record))
        if ended is None or not ended.oom_killed:
            return record

        def oom_killed(current: ContainerStatus) -> ContainerStatus:
            return dataclasses.replace(current, reason="OOMKilled") if current.reason == "Error" else current

        try:
            _, after = self.records.update(record.id, oom_killed)
        except errors.NotFound:
            return record
        self.on_change()
        return after

    def _oom_killed(self, record: ContainerRecord, ended: ExitStatus) -> bool:
        """Whether the kernel's OOM killer ended the container: its monitor saw it, or, on cgroup v2, the
        container died of SIGKILL while the pod's OOM kill count rose. conmon reads the container's own
        ``memory.events``, which systemd may remove with the emptied scope before conmon gets there (the systemd
        driver; conmon#426, cri-o#7035); the pod's cgroup stays. Another container of the pod OOM-killed meanwhile
        would count too: a SIGKILL from elsewhere in that window is reported as OOMKilled."""
        if ended.oom_killed:
            return True
        baseline = record.status.pod_oom_kills_at_start
        if ended.code != SIGKILL_EXIT or baseline is None:
            return False
        sandbox = self.sandboxes.records.find(record.sandbox_id)
        now = None if sandbox is None else cgroups.pod_oom_kills(sandbox.cgroup)
        return now is not None and now > baseline

    def stop(self, container_id: str, timeout: float) -> None:
        record = self.records.find(container_id)
        if record is None:
            return  # CRI: stopping an unknown container succeeds
        record = self.refresh(record)
        if record.status.state not in ("CREATED", "RUNNING"):
            return
        handler = self.handler(record.handler)
        # A created container runs nothing that could stop gracefully.
        if timeout > 0 and record.status.state == "RUNNING":
            handler.signal(record.id, self._stop_signal(record), self.paths(record))
            if self._wait_exit(record, timeout):
                return
        handler.signal(record.id, signal.SIGKILL, self.paths(record))
        if not self._wait_exit(record, 30):
            raise errors.Unavailable(f"container {record.id} did not exit after SIGKILL")

    def _stop_signal(self, record: ContainerRecord) -> int:
        image = self.images.status(record.image_id)
        name = str((image.config if image else {}).get("StopSignal") or "SIGTERM").upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        return SIGNALS.get(name, int(signal.SIGTERM))

    def _wait_exit(self, record: ContainerRecord, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.refresh(self.records.get(record.id)).status.state == "EXITED":
                return True
            time.sleep(0.005)
        return False

    def remove(self, container_id: str) -> None:
        record = self.records.find(container_id)
        if record is None:
            return  # CRI: removing an unknown container succeeds
        record = self.refresh(record)
        if record.status.state in ("CREATED", "RUNNING"):
            self.stop(record.id, 0)  # CRI: a running container is removed by force
        self._discard(record)
        self.on_change()
        self.events.publish("DELETED", record)

    def in_sandbox(self, sandbox_id: str) -> list[ContainerRecord]:
        return [record for record in self.records.list() if record.sandbox_id == sandbox_id]

    def uses_image(self, image_id: str) -> bool:
        return any(record.image_id == image_id for record in self.records.list())

    # --- Exec, logs, resources, stats -------------------------------------------------------------------------

    def exec_sync(self, container_id: str, command: list[str], timeout: float) -> ExecResult:
        record = self.get(container_id)
        if record.status.state != "RUNNING":
            raise errors.FailedPrecondition(f"container {record.id} is not running")
        return self.handler(record.handler).exec_sync(record.id, command, timeout)

    def check_exec(self, container_id: str) -> ContainerRecord:
        """The container, if an interactive exec (CRI Exec) can run in it now."""
        record = self.get(container_id)
        if record.status.state != "RUNNING":
            raise errors.FailedPrecondition(f"container {record.id} is not running")
        return record

    def exec(
        self, container_id: str, command: list[str], *, tty: bool, stdin: bool, size: TerminalSize | None
    ) -> StdioSession:
        """An interactive exec's command, started (by the streaming server, when its client connects)."""
        record = self.check_exec(container_id)
        return self.handler(record.handler).exec(record.id, command, tty=tty, stdin=stdin, size=size)

    def check_attach(self, container_id: str, *, stdin: bool, tty: bool) -> ContainerRecord:
        """The container, if a client can attach to it now as asked (CRI Attach)."""
        record = self.check_exec(container_id)
        if tty != record.tty:
            raise errors.InvalidArgument(
                f"Attach: tty is {tty}, but container {record.id} was created with tty {record.tty}"
            )
        if stdin and not record.stdin:
            raise errors.InvalidArgument(f"Attach: stdin asked for, but container {record.id} was created without")
        return record

    def attach(self, container_id: str, *, stdin: bool, tty: bool, size: TerminalSize | None) -> StdioSession:
        """A client attached to the container's stdio (by the streaming server, when its client connects)."""
        record = self.check_attach(container_id, stdin=stdin, tty=tty)
        handler = self.handler(record.handler)
        return handler.attach(record.id, self.paths(record), stdin=stdin, tty=tty, size=size)

    def reopen_log(self, container_id: str) -> None:
        record = self.get(container_id)
        if record.status.state != "RUNNING":
            raise errors.FailedPrecondition(f"container {record.id} is not running")
        self.handler(record.handler).reopen_log(record.id, self.paths(record))

    def update_resources(self, container_id: str, linux_resources: dict[str, Any]) -> None:
        record = self.get(container_id)
        if record.status.state not in ("CREATED", "RUNNING"):
            raise errors.FailedPrecondition(f"container {record.id} is not running")
        self.handler(record.handler).update_resources(record.id, container_spec.container_resources(linux_resources))

    def readings(self, record: ContainerRecord) -> Readings | None:
        """A running container's readings for the CRI metrics; None when it is not running."""
        sandbox = self.sandboxes.records.find(record.sandbox_id)
        if sandbox is None or record.status.state != "RUNNING":
            return None
        path = sandbox.cgroup.container_path(record.id)
        usage, details = self.handler(record.handler).measure(record.id, path)
        used, _ = self._writable_layer(record)
        return Readings(
            usage=usage,
            details=details,
            open_files=None if details.pids is None else processes.open_files(details.pids),
            writable_bytes=used,
            filesystem=os.statvfs(self.files),
        )

    def usage(self, record: ContainerRecord) -> tuple[cgroups.Usage, int, int]:
        """What the container uses (its handler says how to read it), and the writable layer's bytes and
        inodes."""
        sandbox = self.sandboxes.records.find(record.sandbox_id)
        used, inodes = self._writable_layer(record)
        if sandbox is None or record.status.state != "RUNNING":
            return cgroups.NO_USAGE, used, inodes
        return (
            self.handler(record.handler).usage(record.id, sandbox.cgroup.container_path(record.id)),
            used,
            inodes,
        )

    def _writable_layer(self, record: ContainerRecord) -> tuple[int, int]:
        """The writable layer's bytes and inodes."""
        used = inodes = 0
        for item in (self.files / record.id / "upper").rglob("*"):
            inodes += 1
            try:
                used += item.lstat().st_blocks * 512
            except FileNotFoundError:
                continue
        return used, inodes
