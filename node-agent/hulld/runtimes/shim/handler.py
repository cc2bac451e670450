"""containerd shim v2 handlers (``runtime_type = "vm"``): Kata Containers, gVisor's and runc's shims.

One shim process per pod holds all its containers, the pod's infra container first (its ID names the shim,
and the runtime's sandbox: Kata's VM, gVisor's sandbox). hulld starts it (``launch.start``), then speaks the
task API to it over ttrpc: Create, Start, Kill, State, Wait, Exec, Update, Delete, and Shutdown once the pod's
last container is deleted.

- **Exits** come from ``Wait``, one call in flight per container; its answer is written where the OCI handler's
  monitor writes them (``<exits>/<id>``, mtime = exit time), so the rest of hulld reads both the same way.
- **OOM kills** arrive as ``/tasks/oom`` events. Shims publish events to ``TTRPC_ADDRESS``, which must answer
  even while hulld restarts (gVisor's shim panics otherwise): the ``recorder`` process there spools them, and
  hulld reads the spool. A shim's OOM watch and its reaper race, so its OOM event mostly, not always, comes
  before the exit event: an exit by SIGKILL (137) is held until the shim's own ``/tasks/exit`` event for it
  (or a second), and a later OOM event still turns the container's reason to OOMKilled (``containers``).
- **Logs**: each container's stdout and stderr are FIFOs in its bundle; ``stdio.LogCopier`` turns them into
  the CRI log.
- **The shim's own log** comes through a FIFO named ``log`` in its bundle (shims refuse to start without one)
  into ``pods/<id>.log`` in the handler's state directory.
- **Restarts**: hulld's per-container notes (``containers/<id>.json``: pod, bundle, exits, log) and per-pod
  shim addresses (``pods/<id>.address``) live in the handler's state directory. After a restart the handler
  connects to each pod's shim again in the background, asks ``Wait`` again for every container without a
  recorded exit, and copies their FIFOs again. Statuses and listings read files only, never a shim. A shim
  found dead gets its containers recorded as exited (255) and its own clean-up (``launch.clean_up``).

Each Create carries the options containerd's CRI would send that shim (``options``): runc's for containerd's
runc shim (the cgroup driver), else the handler's ``config_path`` (Kata's configuration.toml, gVisor's runsc.toml).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal as signals
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from hulld import errors
from hulld.atomic import write_atomically
from hulld.config import HandlerConfig, StorageConfig, shim_events_socket
from hulld.node import cgroups
from hulld.node.cgroups.layout import Driver
from hulld.runtimes.base import (
    EXEC_KILL_PATIENCE,
    EXEC_KILL_RETRY,
    ContainerPaths,
    ContainerStdio,
    ExecResult,
    ExitStatus,
    Handler,
    StdioSession,
    TerminalSize,
    recorded_exit,
)
from hulld.runtimes.output import CappedOutput
from hulld.runtimes.shim import launch, options, recorder, stdio, ttrpc
from hulld.runtimes.shim.protocol import cgroup_metrics_pb2, task_pb2, ttrpc_pb2

logger = logging.getLogger(__name__)

TASK_SERVICES = ("containerd.task.v3.Task", "containerd.task.v2.Task")
"""The task service, newest first: the same messages under two names; containerd 2.3's shims serve only v3,
1.x shims (and Kata's, gVisor's) v2."""
EVENTS = "containerd.services.events.ttrpc.v1.Events"
SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/"
"""containerd's type URLs for OCI spec structures, which travel as JSON (Process, LinuxResources)."""
SIGKILL_EXIT = 128 + signals.SIGKILL
EXIT_EVENT_GRACE = 1.0
SHIM_GONE_EXIT = 255
EVENT_POLL = 0.05
NEVER_STARTED_EXIT = 255
NEVER_STARTED_GRACE = 1.0
SHUTDOWN_GRACE = 2.0
RECORDER_START_TIMEOUT = 120.0
"""Its own Python start, which took over 10 s in the emulated VM's first minutes; one that fails exits sooner."""
CALL_TIMEOUT = 60.0
DELETE_ATTEMPTS = 5
"""A container just killed may still hold its cgroup for a moment: gVisor's shim then fails Delete with "removing
cgroup path ...: device or resource busy" (seen in the e2e cluster; the shim then outlived its pod), so it is asked
again, over about 1.5 s."""
CGROUP_V1_METRICS = "io.containerd.cgroups.v1.Metrics"
CGROUP_V2_METRICS = "io.containerd.cgroups.v2.Metrics"
CONNECT_TIMEOUT = 5.0
STATE_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class _Container:
    """What the handler notes about a container, to find it again after a restart."""

    sandbox: str
    bundle: str
    exits: str
    log: str
    stdin_once: bool = False
    """Its input (a FIFO in its bundle, if it has one) ends when the first attached client's does."""

    @property
    def exits_dir(self) -> Path:
        return Path(self.exits)


def _task_service(client: ttrpc.Client, sandbox: str) -> ttrpc.Service:
    """The task service the shim serves, asked with Connect (a shim answers UNIMPLEMENTED for a service it lacks)."""
    for name in TASK_SERVICES:
        try:
            client.call(name, "Connect", task_pb2.ConnectRequest(id=sandbox), task_pb2.ConnectResponse, CONNECT_TIMEOUT)
        except ttrpc.TTRPCError as error:
            if error.code == ttrpc.UNIMPLEMENTED:
                continue
            client.close()
            raise
        return ttrpc.Service(client, name)
    client.close()
    raise ttrpc.TTRPCError(f"{client.address} serves no task service hulld knows ({', '.join(TASK_SERVICES)})")


def _ensure_recorder(address: Path, spool: Path, log: Path) -> None:
    """Start the event recorder (``recorder``) at ``address`` unless one answers there already (it outlives
    hulld; a restarted hulld finds it). What it says on stderr goes to ``log``."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.connect(str(address))
        return
    package_root = Path(recorder.__file__).parents[3]
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", recorder.__name__, str(address), str(spool)],
            env={**os.environ, "PYTHONPATH": str(package_root)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,  # not in hulld's process group: it outlives hulld
            close_fds=True,
        )
    deadline = time.monotonic() + RECORDER_START_TIMEOUT
    while not address.exists():
        if process.poll() is not None:
            raise errors.Unavailable(
                f"the shim event recorder exited with code {process.returncode} before serving at {address}; see {log}"
            )
        if time.monotonic() > deadline:
            raise errors.Unavailable(f"the shim event recorder did not start at {address}; see {log}")
        time.sleep(0.01)


def _terminal(bundle: Path) -> bool:
    """Whether the container in ``bundle`` runs on a terminal (one output FIFO, no stderr)."""
    return not (bundle / "stderr").exists()


def _spec_any(kind: str, value: dict[str, Any]) -> any_pb2.Any:
    return any_pb2.Any(type_url=SPEC_TYPE + kind, value=json.dumps(value).encode())


class ShimHandler(Handler):
    def __init__(self, name: str, config: HandlerConfig, storage: StorageConfig, cgroup_driver: Driver) -> None:
        state = storage.state
        self.name = name
        self.binary = config.runtime_path
        self.state = state / "runtimes" / name
        for directory in ("pods", "containers", "oom", "exec"):
            (self.state / directory).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.options = options.CreateOptions(name, config.runtime_path, config.config_path, cgroup_driver, self.state)
        self.address = self.state / "hulld.sock"
        """Passed as the shim's ``-address`` (containerd's own socket there): shims hash it into their socket
        paths, so each hulld handler's shims have their own."""
        self.stdio = stdio.LogCopier(f"shim handler {name}")
        self._clients: dict[str, ttrpc.Service] = {}
        self._connecting: dict[str, threading.Lock] = {}
        self._bootstrap = False
        """Whether the shim speaks containerd 2.3's bootstrap (learnt at its first start)."""
        self._waiting: set[str] = set()
        self._held_exits: dict[str, tuple[int, int]] = {}
        """SIGKILL exits waiting for the shim's exit event (after its OOM event, if any)."""
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self.events = shim_events_socket(state, name)
        self.events.parent.mkdir(exist_ok=True, mode=0o700)
        self.spool = self.state / "events"
        _ensure_recorder(self.events, self.spool, self.state / "recorder.log")
        threading.Thread(target=self._read_events, name=f"{name} events", daemon=True).start()
        threading.Thread(target=self._resume, name=f"{name} resume", daemon=True).start()

    @property
    def sandbox_per_pod(self) -> bool:
        return True  # one shim per pod, started with the pod's infra container

    def close(self) -> None:
        """Stop serving (hulld exits or reconfigures): shims and their containers go on without hulld."""
        self._closed.set()
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    # --- notes kept in the handler's state directory ------------------------------------------------------

    def _note(self, container_id: str) -> _Container | None:
        try:
            return _Container(**json.loads((self.state / "containers" / f"{container_id}.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _noted(self, container_id: str) -> _Container:
        note = self._note(container_id)
        if note is None:
            raise errors.NotFound(f"{self.name}: container {container_id} is not known to its shim handler")
        return note

    def _pod_containers(self, sandbox: str) -> list[str]:
        return [
            path.stem
            for path in (self.state / "containers").glob("*.json")
            if (note := self._note(path.stem)) is not None and note.sandbox == sandbox
        ]

    # --- the pod's shim ------------------------------------------------------------------------------------

    def _shim_address(self, sandbox: str) -> Path:
        """The shim's socket and bundle, a line each."""
        return self.state / "pods" / f"{sandbox}.address"

    def _shim_log(self, sandbox: str) -> Path:
        """The shim's own log (kept until the pod's shim is gone), for troubleshooting."""
        return self.state / "pods" / f"{sandbox}.log"

    def _client(self, sandbox: str) -> ttrpc.Service:
        """The connection to the pod's shim, made again if there is none (hulld restarted) or it was lost; on
        each new connection the pod's containers without a recorded exit are waited for again, and their
        output copied if it is not. Connecting to one pod's shim never holds up another pod's calls."""
        with self._lock:
            client = self._clients.get(sandbox)
            if client is not None and not client.closed.is_set():
                return client
            connecting = self._connecting.setdefault(sandbox, threading.Lock())
        with connecting:
            with self._lock:
                client = self._clients.get(sandbox)
            if client is not None and not client.closed.is_set():
                return client
            try:
                socket_path, bundle = (Path(line) for line in self._shim_address(sandbox).read_text().splitlines())
            except (FileNotFoundError, ValueError):
                raise errors.NotFound(f"{self.name}: pod {sandbox} has no shim") from None
            self._copy(f"shim-{sandbox}", {"shim": bundle / "log"}, self._shim_log(sandbox))
            try:
                client = _task_service(ttrpc.Client(socket_path, timeout=CONNECT_TIMEOUT), sandbox)
            except (OSError, ttrpc.TTRPCError) as error:
                self._shim_gone(sandbox, f"connecting to {socket_path}: {error}")
                raise errors.Unavailable(f"{self.name}: the shim of pod {sandbox} is gone ({error})") from error
            with self._lock:
                self._clients[sandbox] = client
        for container_id in self._pod_containers(sandbox):
            note = self._note(container_id)
            if note is not None and not (note.exits_dir / container_id).exists():
                bundle = Path(note.bundle)
                self._copy(container_id, self._fifos(bundle, _terminal(bundle)), Path(note.log) if note.log else None)
                self._wait_for_exit(client, container_id, note)
        return client

    def _copy(self, key: str, fifos: dict[str, Path], log: Path | None) -> None:
        """Copy output again after a restart, unless it is copied already; FIFOs gone are only logged."""
        if self.stdio.attached(key):
            return
        try:
            self.stdio.attach(key, fifos, log, fresh=False)
        except OSError as error:
            logger.warning("%s: cannot copy the output of %s again: %s", self.name, key, error)

    def _resume(self) -> None:
        """After a restart: connect to every pod's shim again (in the background: a shim that does not answer
        holds up nothing but itself), which waits for its containers' exits again."""
        for address in sorted((self.state / "pods").glob("*.address")):
            try:
                self._client(address.name.removesuffix(".address"))
            except errors.HulldError as error:
                logger.warning("%s: %s", self.name, error)

    def _call(self, sandbox: str, method: str, request: Any, answer_type: type[Any]) -> Any:
        try:
            return self._client(sandbox).call(method, request, answer_type, CALL_TIMEOUT)
        except ttrpc.TTRPCError as error:
            raise errors.FailedPrecondition(f"{self.name} {method}: {error}") from error

    def _start_shim(self, sandbox: str, bundle: Path) -> None:
        # The shim writes its own log into a FIFO named "log" in its bundle; it refuses to run without one.
        os.mkfifo(bundle / "log", 0o600)
        self.stdio.attach(f"shim-{sandbox}", {"shim": bundle / "log"}, self._shim_log(sandbox), fresh=True)
        try:
            socket_path = launch.start(
                self.binary, self.address, self.events, sandbox, bundle, bootstrap=self._bootstrap
            )
        except launch.NeedsBootstrap:
            self._bootstrap = True  # containerd 2.3's bootstrap, from now on
            socket_path = launch.start(self.binary, self.address, self.events, sandbox, bundle, bootstrap=True)
        write_atomically(self._shim_address(sandbox), f"{socket_path}\n{bundle}")
        try:
            client = _task_service(ttrpc.Client(socket_path), sandbox)
        except (OSError, ttrpc.TTRPCError) as error:
            raise errors.FailedPrecondition(f"{self.name}: the new shim does not answer at {socket_path}") from error
        with self._lock:
            self._clients[sandbox] = client

    def _shut_down(self, sandbox: str) -> None:
        """The pod's last container is deleted: its shim goes. A shim still holding a container hulld left to it
        (see ``_end_unstarted``) acknowledges Shutdown and stays, so it is killed (the pod's sandbox is gone)."""
        with self._lock:
            client = self._clients.pop(sandbox, None)
            self._connecting.pop(sandbox, None)
        shim = self._shim_process(sandbox)
        if client is not None:
            with contextlib.suppress(ttrpc.TTRPCError):
                client.call("Shutdown", task_pb2.ShutdownRequest(id=sandbox, now=True), task_pb2.Empty, CALL_TIMEOUT)
            client.close()
        if shim is not None:
            deadline = time.monotonic() + SHUTDOWN_GRACE
            while Path(f"/proc/{shim}").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            if self._shim_process(sandbox) == shim:
                logger.warning("%s: the shim of pod %s did not exit after Shutdown; killing it", self.name, sandbox)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(shim, signals.SIGKILL)
        self.stdio.detach(f"shim-{sandbox}")
        self._shim_address(sandbox).unlink(missing_ok=True)
        self._shim_log(sandbox).unlink(missing_ok=True)

    def _shim_process(self, sandbox: str) -> int | None:
        """The PID of the pod's running shim, from the ``shim.pid`` its ``start`` wrote, if that process is still
        a shim of this pod (its command line names the pod)."""
        try:
            bundle = Path(self._shim_address(sandbox).read_text().splitlines()[1])
            pid = int((bundle / "shim.pid").read_text())
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if sandbox.encode() in command_line else None

    def _shim_gone(self, sandbox: str, reason: str) -> None:
        """The pod's shim cannot be reached: its containers ended with it (as far as hulld can tell). The shim's
        own clean-up of each runs in the background."""
        if self._closed.is_set():
            return
        logger.warning(
            "%s: the shim of pod %s is gone (%s); its containers are recorded as exited", self.name, sandbox, reason
        )
        ended = []
        for container_id in self._pod_containers(sandbox):
            note = self._note(container_id)
            if note is not None and not (note.exits_dir / container_id).exists():
                self._record_exit(container_id, note, SHIM_GONE_EXIT, time.time_ns())
                ended.append((container_id, Path(note.bundle)))

        def clean_up() -> None:
            for container_id, bundle in ended:
                output = launch.clean_up(self.binary, self.address, self.events, container_id, bundle)
                logger.info("%s: clean-up of container %s: %s", self.name, container_id, output)

        threading.Thread(target=clean_up, name=f"{self.name} clean-up", daemon=True).start()

    # --- exits and events ----------------------------------------------------------------------------------

    def _wait_for_exit(self, client: ttrpc.Service, container_id: str, note: _Container) -> None:
        with self._lock:
            if container_id in self._waiting:
                return
            self._waiting.add(container_id)
        answer = client.call_async("Wait", task_pb2.WaitRequest(id=container_id), task_pb2.WaitResponse)
        answer.add_done_callback(lambda done: self._waited(container_id, note, done))

    def _waited(self, container_id: str, note: _Container, done: Future[task_pb2.WaitResponse]) -> None:
        with self._lock:
            self._waiting.discard(container_id)
        error = done.exception()
        if error is not None:
            if isinstance(error, ttrpc.TTRPCError) and error.code is None:
                self._shim_gone(note.sandbox, str(error))
            elif self._note(container_id) is not None:
                logger.warning("%s: Wait for container %s: %s", self.name, container_id, error)
            return
        answer = done.result()
        exited_at = answer.exited_at.ToNanoseconds() if answer.HasField("exited_at") else time.time_ns()
        if answer.exit_status == SIGKILL_EXIT and not (self.state / "oom" / container_id).exists():
            with self._lock:
                self._held_exits[container_id] = (answer.exit_status, exited_at)
            timer = threading.Timer(EXIT_EVENT_GRACE, self._release_exit, (container_id, note))
            timer.daemon = True
            timer.start()
            return
        self._record_exit(container_id, note, answer.exit_status, exited_at)

    def _release_exit(self, container_id: str, note: _Container | None = None) -> None:
        with self._lock:
            held = self._held_exits.pop(container_id, None)
        note = note or self._note(container_id)
        if held is not None and note is not None:
            self._record_exit(container_id, note, *held)

    @staticmethod
    def _record_exit(container_id: str, note: _Container, code: int, exited_at: int) -> None:
        exit_file = note.exits_dir / container_id
        if exit_file.exists():
            return
        exit_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(exit_file, str(code))
        os.utime(exit_file, ns=(exited_at, exited_at))

    def _read_events(self) -> None:
        """Take the shims' events from the recorder's spool, in the order they came."""
        while not self._closed.wait(EVENT_POLL):
            for path in sorted(self.spool.glob("[0-9]*")):
                try:
                    request = ttrpc_pb2.Request.FromString(path.read_bytes())
                    if (request.service, request.method) == (EVENTS, "Forward"):
                        self._event(task_pb2.ForwardRequest.FromString(request.payload).envelope)
                except (OSError, DecodeError) as error:
                    logger.warning("%s: an unreadable event %s: %s", self.name, path.name, error)
                path.unlink(missing_ok=True)

    def _event(self, envelope: task_pb2.Envelope) -> None:
        if envelope.topic == "/tasks/oom":
            container_id = task_pb2.TaskOOM.FromString(envelope.event.value).container_id
            if self._note(container_id) is not None:
                (self.state / "oom" / container_id).touch()
        elif envelope.topic == "/tasks/exit":
            exited = task_pb2.TaskExit.FromString(envelope.event.value)
            if exited.id == exited.container_id:  # the container's own process, not one of its execs
                self._release_exit(exited.container_id)

    # --- stdio ---------------------------------------------------------------------------------------------

    @staticmethod
    def _fifos(bundle: Path, terminal: bool) -> dict[str, Path]:
        # A terminal has one output: the shim copies it to stdout.
        return {"stdout": bundle / "stdout"} if terminal else {"stdout": bundle / "stdout", "stderr": bundle / "stderr"}

    # --- Handler -------------------------------------------------------------------------------------------

    def create(self, container_id: str, name: str, paths: ContainerPaths, sandbox: str, stdio: ContainerStdio) -> int:
        note = _Container(
            sandbox=sandbox,
            bundle=str(paths.bundle),
            exits=str(paths.exits),
            log=str(paths.log or ""),
            stdin_once=stdio.stdin_once,
        )
        spec = json.loads((paths.bundle / "config.json").read_text())
        terminal = bool(spec.get("process", {}).get("terminal"))
        fifos = self._fifos(paths.bundle, terminal)
        for fifo in fifos.values():
            os.mkfifo(fifo, 0o600)
        if stdio.stdin:
            # The shim keeps a writer of its own open (its input lasts until CloseIO, whoever attaches or not).
            os.mkfifo(paths.bundle / "stdin", 0o600)
        if container_id == sandbox:
            self._start_shim(sandbox, paths.bundle)
        write_atomically(self.state / "containers" / f"{container_id}.json", json.dumps(dataclasses.asdict(note)))
        try:
            self.stdio.attach(container_id, fifos, paths.log, fresh=True)
            request = task_pb2.CreateTaskRequest(
                id=container_id,
                bundle=str(paths.bundle),
                terminal=terminal,
                stdin=str(paths.bundle / "stdin") if stdio.stdin else "",
                stdout=str(fifos["stdout"]),
                stderr=str(fifos.get("stderr", "")),
            )
            create_options = self.options.value()
            if create_options is not None:
                request.options.CopyFrom(create_options)
            created = self._call(sandbox, "Create", request, task_pb2.CreateTaskResponse)
        except BaseException:
            self.stdio.detach(container_id)
            (self.state / "containers" / f"{container_id}.json").unlink(missing_ok=True)
            if container_id == sandbox:
                self._shut_down(sandbox)
            raise
        self._wait_for_exit(self._client(sandbox), container_id, note)
        return int(created.pid)

    def start(self, container_id: str, paths: ContainerPaths) -> None:
        note = self._noted(container_id)
        self._call(note.sandbox, "Start", task_pb2.StartRequest(id=container_id), task_pb2.StartResponse)
        self._started(container_id).touch()

    def signal(self, container_id: str, signal: int, paths: ContainerPaths) -> None:
        note = self._note(container_id)
        if note is None or (note.exits_dir / container_id).exists():
            return
        try:
            # all: so that the shim ends a container whose process never started too (runc's shim does).
            self._client(note.sandbox).call(
                "Kill",
                task_pb2.KillRequest(id=container_id, signal=signal, all=signal == signals.SIGKILL),
                task_pb2.Empty,
                CALL_TIMEOUT,
            )
        except ttrpc.TTRPCError as error:
            if error.code != ttrpc.NOT_FOUND:  # "process already finished"
                raise errors.FailedPrecondition(f"{self.name} Kill: {error}") from error
        except errors.Unavailable:
            return  # the shim is gone, and its containers with it
        if signal == signals.SIGKILL and not self._started(container_id).exists():
            self._end_unstarted(container_id, note)

    def _started(self, container_id: str) -> Path:
        """Marks a container hulld started (Start answered)."""
        return self.state / "containers" / f"{container_id}.started"

    def _end_unstarted(self, container_id: str, note: _Container) -> None:
        """gVisor's shim cannot end a container that was never started (it has no process of its own yet), and
        its Delete of one waits forever for output that never comes. If the kill brings no exit, hulld records
        the end itself and leaves the container to the pod's shim, which goes with the pod."""
        deadline = time.monotonic() + NEVER_STARTED_GRACE
        while not (note.exits_dir / container_id).exists():
            if time.monotonic() > deadline:
                (self.state / "containers" / f"{container_id}.unstarted").touch()
                self._record_exit(container_id, note, NEVER_STARTED_EXIT, time.time_ns())
                return
            time.sleep(0.01)

    def running(self, container_id: str) -> bool:
        note = self._note(container_id)
        if note is None:
            return False
        try:
            state = self._client(note.sandbox).call(
                "State", task_pb2.StateRequest(id=container_id), task_pb2.StateResponse, STATE_TIMEOUT
            )
        except (ttrpc.TTRPCError, errors.HulldError):
            return False
        if state.status == task_pb2.STOPPED:
            # Its exit is in the answer: recovery asks right after a restart, before the Wait resumed in the
            # background may have brought it.
            exited_at = state.exited_at.ToNanoseconds() if state.HasField("exited_at") else time.time_ns()
            self._record_exit(container_id, note, state.exit_status, exited_at)
        return bool(state.status == task_pb2.RUNNING)

    def exit_status(self, container_id: str, paths: ContainerPaths) -> ExitStatus | None:
        recorded = recorded_exit(paths.exits, container_id)
        if recorded is None:
            return None
        return ExitStatus(*recorded, oom_killed=(self.state / "oom" / container_id).exists())

    def delete(self, container_id: str, paths: ContainerPaths) -> None:
        note = self._note(container_id)
        self.stdio.detach(container_id)
        if note is None:
            return
        unstarted = self.state / "containers" / f"{container_id}.unstarted"
        with contextlib.suppress(errors.NotFound, errors.Unavailable):
            client = self._client(note.sandbox)
            if unstarted.exists():
                raise errors.NotFound("left to the pod's shim")  # see signal()
            for attempt in range(DELETE_ATTEMPTS):
                try:
                    client.call(
                        "Delete", task_pb2.DeleteRequest(id=container_id), task_pb2.DeleteResponse, CALL_TIMEOUT
                    )
                    break
                except ttrpc.TTRPCError as error:
                    if error.code == ttrpc.NOT_FOUND:
                        break
                    if attempt == DELETE_ATTEMPTS - 1:
                        raise errors.FailedPrecondition(f"{self.name} Delete: {error}") from error
                    time.sleep(0.1 * 2**attempt)
        (self.state / "containers" / f"{container_id}.json").unlink(missing_ok=True)
        unstarted.unlink(missing_ok=True)
        self._started(container_id).unlink(missing_ok=True)
        (self.state / "oom" / container_id).unlink(missing_ok=True)
        if not self._pod_containers(note.sandbox):
            self._shut_down(note.sandbox)

    def _new_exec(
        self, container_id: str, command: list[str], fifo_names: list[str], *, tty: bool
    ) -> tuple[_Container, dict[str, Any], str, Path, dict[str, Path]]:
        """What an Exec call needs: the container's note, the process (the container's own, running
        ``command``), a fresh exec ID, its directory and the stdio FIFOs made in it."""
        if not command:
            raise errors.InvalidArgument("exec needs a command")
        note = self._noted(container_id)
        process = json.loads((Path(note.bundle) / "config.json").read_text())["process"]
        process.update(args=command, terminal=tty)
        exec_id = f"exec-{secrets.token_hex(8)}"
        directory = self.state / "exec" / exec_id
        directory.mkdir(mode=0o700)
        fifos = {name: directory / name for name in fifo_names}
        for fifo in fifos.values():
            os.mkfifo(fifo, 0o600)
        return note, process, exec_id, directory, fifos

    def exec_sync(self, container_id: str, command: list[str], timeout: float) -> ExecResult:
        note, process, exec_id, directory, fifos = self._new_exec(
            container_id, command, ["stdout", "stderr"], tty=False
        )
        output = CappedOutput({name: stdio.open_fifo(path) for name, path in fifos.items()})
        client = self._client(note.sandbox)
        try:
            request = task_pb2.ExecProcessRequest(
                id=container_id, exec_id=exec_id, stdout=str(fifos["stdout"]), stderr=str(fifos["stderr"])
            )
            request.spec.CopyFrom(_spec_any("Process", process))
            self._call(note.sandbox, "Exec", request, task_pb2.Empty)
            ended = client.call_async(
                "Wait", task_pb2.WaitRequest(id=container_id, exec_id=exec_id), task_pb2.WaitResponse
            )
            self._call(
                note.sandbox, "Start", task_pb2.StartRequest(id=container_id, exec_id=exec_id), task_pb2.StartResponse
            )
            try:
                code = ended.result(timeout or None).exit_status
            except TimeoutError:
                _kill_exec(client, container_id, exec_id, ended)
                raise errors.DeadlineExceeded(f"ExecSync {command[0]!r} timed out after {timeout:g}s") from None
            except ttrpc.TTRPCError as error:
                raise errors.FailedPrecondition(f"{self.name} Wait: {error}") from error
            kept = output.result()
            return ExecResult(stdout=kept["stdout"], stderr=kept["stderr"], exit_code=int(code))
        finally:
            output.close()
            with contextlib.suppress(ttrpc.TTRPCError):
                client.call("Delete", task_pb2.DeleteRequest(id=container_id, exec_id=exec_id), task_pb2.DeleteResponse)
            shutil.rmtree(directory, ignore_errors=True)

    def attach(
        self, container_id: str, paths: ContainerPaths, *, stdin: bool, tty: bool, size: TerminalSize | None
    ) -> StdioSession:
        note = self._noted(container_id)
        listener = self.stdio.listen(container_id)
        if listener is None:
            raise errors.FailedPrecondition(f"container {container_id}: its output has ended")
        input_end = None
        if stdin:
            try:  # the shim holds the FIFO's reader (and a writer of its own): opening it does not wait
                input_end = os.open(
                    Path(note.bundle) / "stdin", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
                )
            except OSError as error:
                self.stdio.unlisten(container_id, listener)
                raise errors.FailedPrecondition(f"container {container_id} takes no input: {error}") from error
            os.set_blocking(input_end, True)
        session = _ShimAttach(self, self._client(note.sandbox), container_id, listener, input_end, note.stdin_once)
        if tty and size is not None:
            session.resize(*size)
        return session

    def exec(
        self, container_id: str, command: list[str], *, tty: bool, stdin: bool, size: TerminalSize | None
    ) -> StdioSession:
        names = ["stdout", *([] if tty else ["stderr"]), *(["stdin"] if stdin else [])]
        note, process, exec_id, directory, fifos = self._new_exec(container_id, command, names, tty=tty)
        # Ours before the shim opens its ends (it waits for a reader); stdin read-write, so that opening it
        # needs no reader yet and closing it is the shim's end of input.
        ends = {name: stdio.open_fifo(path) for name, path in fifos.items() if name != "stdin"}
        if stdin:
            ends["stdin"] = os.open(fifos["stdin"], os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        client = self._client(note.sandbox)
        session = _ShimExec(self, client, container_id, exec_id, directory, ends)
        try:
            request = task_pb2.ExecProcessRequest(
                id=container_id,
                exec_id=exec_id,
                terminal=tty,
                stdin=str(fifos.get("stdin", "")),
                stdout=str(fifos["stdout"]),
                stderr=str(fifos.get("stderr", "")),
            )
            request.spec.CopyFrom(_spec_any("Process", process))
            self._call(note.sandbox, "Exec", request, task_pb2.Empty)
            session.ended = client.call_async(
                "Wait", task_pb2.WaitRequest(id=container_id, exec_id=exec_id), task_pb2.WaitResponse
            )
            self._call(
                note.sandbox, "Start", task_pb2.StartRequest(id=container_id, exec_id=exec_id), task_pb2.StartResponse
            )
        except BaseException:
            session.close()
            raise
        for name in ("stdout", "stderr"):
            if name in ends:
                os.set_blocking(ends[name], True)  # the shim holds its end now: a read waits for output or EOF
        if tty and size is not None:
            session.resize(*size)  # the shim's terminal exists once the exec has started
        return session

    def usage(self, container_id: str, cgroups_path: str) -> cgroups.Usage:
        if cgroups.has_processes(cgroups_path):  # runc's shim: the container's processes are the host's
            return super().usage(container_id, cgroups_path)
        # A sandbox or VM shim (gVisor's, Kata's): its containers' host cgroups stay empty; the shim knows.
        return self._shim_stats(container_id)[0]

    def measure(self, container_id: str, cgroups_path: str) -> tuple[cgroups.Usage, cgroups.Details]:
        if cgroups.has_processes(cgroups_path):
            return super().measure(container_id, cgroups_path)
        usage, tasks = self._shim_stats(container_id)  # of the rest, a sandbox shim tells the tasks it runs
        return usage, cgroups.Details(threads=tasks)

    def _shim_stats(self, container_id: str) -> tuple[cgroups.Usage, int | None]:
        """(usage, tasks) from the shim's Stats answer: cgroup v1 or v2 metrics, whichever it sends."""
        note = self._note(container_id)
        if note is None:
            return cgroups.NO_USAGE, None
        try:
            answer = self._call(note.sandbox, "Stats", task_pb2.StatsRequest(id=container_id), task_pb2.StatsResponse)
        except errors.HulldError as error:
            logger.info("%s: no stats for %s: %s", self.name, container_id, error)
            return cgroups.NO_USAGE, None
        try:
            return _decoded_stats(answer.stats)
        except DecodeError as error:
            logger.warning("%s: stats of %s do not decode: %s", self.name, container_id, error)
        except ValueError:
            logger.info("%s: stats of %s are %s, not read", self.name, container_id, answer.stats.type_url)
        return cgroups.NO_USAGE, None

    def version(self) -> str:
        return launch.version(self.binary)

    def reopen_log(self, container_id: str, paths: ContainerPaths) -> None:
        if not self.stdio.reopen(container_id):
            raise errors.FailedPrecondition(f"container {container_id}: its output is not being copied")

    def update_resources(self, container_id: str, resources: dict[str, object]) -> None:
        note = self._noted(container_id)
        request = task_pb2.UpdateTaskRequest(id=container_id)
        request.resources.CopyFrom(_spec_any("LinuxResources", resources))
        self._call(note.sandbox, "Update", request, task_pb2.Empty)


class _ShimExec(StdioSession):
    """An interactive exec in a pod's shim: its FIFOs (read ends for output, the write end of stdin) and the
    shim's calls for the rest: Wait, ResizePty, CloseIO, Kill, Delete."""

    def __init__(
        self,
        handler: ShimHandler,
        client: ttrpc.Service,
        container_id: str,
        exec_id: str,
        directory: Path,
        ends: dict[str, int],
    ) -> None:
        self._handler = handler
        self._client = client
        self._container_id, self._exec_id = container_id, exec_id
        self._directory = directory
        self.stdin = ends.get("stdin")
        self.stdout = ends["stdout"]
        self.stderr = ends.get("stderr")
        self.ended: Future[task_pb2.WaitResponse] | None = None

    def wait(self) -> int:
        if self.ended is None:
            raise errors.FailedPrecondition(f"{self._handler.name}: exec {self._exec_id} never started")
        try:
            return int(self.ended.result().exit_status)
        except ttrpc.TTRPCError as error:
            raise errors.FailedPrecondition(f"{self._handler.name} Wait: {error}") from error

    def resize(self, width: int, height: int) -> None:
        _resize_pty(self._client, self._container_id, self._exec_id, width, height)

    def end_input(self) -> None:
        if self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None
        _close_input(self._client, self._container_id, self._exec_id)

    def kill(self) -> None:
        if self.ended is not None:
            _kill_exec(self._client, self._container_id, self._exec_id, self.ended)

    def close(self) -> None:
        self._close_descriptors()
        with contextlib.suppress(ttrpc.TTRPCError):
            request = task_pb2.DeleteRequest(id=self._container_id, exec_id=self._exec_id)
            self._client.call("Delete", request, task_pb2.DeleteResponse, CALL_TIMEOUT)
        shutil.rmtree(self._directory, ignore_errors=True)


class _ShimAttach(StdioSession):
    """A client attached to a container of a pod's shim: its output as the handler's copier tees it, its input
    written into the container's stdin FIFO (the shim's own writer keeps that input open in between clients)."""

    def __init__(
        self,
        handler: ShimHandler,
        client: ttrpc.Service,
        container_id: str,
        listener: stdio.Listener,
        input_end: int | None,
        stdin_once: bool,
    ) -> None:
        self._handler = handler
        self._client = client
        self._container_id = container_id
        self._listener = listener
        self._stdin_once = stdin_once
        self.stdin = input_end
        self.stdout = listener.outputs["stdout"]
        self.stderr = listener.outputs.get("stderr")

    def wait(self) -> int:
        self._listener.ended.wait()
        return 0

    def resize(self, width: int, height: int) -> None:
        _resize_pty(self._client, self._container_id, "", width, height)

    def end_input(self) -> None:
        if self.stdin is None:
            return
        os.close(self.stdin)
        self.stdin = None
        if self._stdin_once:  # the container's input ends with its first client's
            _close_input(self._client, self._container_id, "")

    def kill(self) -> None:
        self._handler.stdio.unlisten(self._container_id, self._listener)

    def close(self) -> None:
        self.kill()
        self._close_descriptors()


def _decoded_stats(stats: any_pb2.Any) -> tuple[cgroups.Usage, int]:
    """(usage, tasks) from a shim's metrics, v1 or v2 (gVisor's shim sends v2 under the systemd driver); the
    working set is usage less inactive file pages, as cAdvisor counts it. ValueError: neither kind."""
    kind = stats.type_url.rpartition("/")[2]
    if kind == CGROUP_V1_METRICS:
        v1 = cgroup_metrics_pb2.CgroupV1Metrics.FromString(stats.value)
        cpu, used, inactive, tasks = v1.cpu.usage.total, v1.memory.usage.usage, v1.memory.total_inactive_file, v1.pids
    elif kind == CGROUP_V2_METRICS:
        v2 = cgroup_metrics_pb2.CgroupV2Metrics.FromString(stats.value)
        cpu, used, inactive, tasks = v2.cpu.usage_usec * 1000, v2.memory.usage, v2.memory.inactive_file, v2.pids
    else:
        raise ValueError(kind)
    usage = cgroups.Usage(
        cpu_nanoseconds=cpu,
        memory_usage=used,
        memory_working_set=max(0, used - inactive),
        memory_rss=None,  # a sandbox shim leaves it 0 whatever the truth: not to be told apart
    )
    return usage, tasks.current


def _kill_exec(client: ttrpc.Service, container_id: str, exec_id: str, ended: Future[task_pb2.WaitResponse]) -> None:
    """SIGKILL an exec'd process, again every EXEC_KILL_RETRY until its Wait answers, up to EXEC_KILL_PATIENCE;
    each failure logged."""
    request = task_pb2.KillRequest(id=container_id, exec_id=exec_id, signal=signals.SIGKILL)
    deadline = time.monotonic() + EXEC_KILL_PATIENCE
    failure = ""
    while not ended.done():
        try:
            client.call("Kill", request, task_pb2.Empty, max(1.0, deadline - time.monotonic()))
        except ttrpc.TTRPCError as error:
            failure = str(error)
            if not ended.done():
                logger.warning("Kill of exec %s in %s failed: %s", exec_id, container_id, failure)
        if futures.wait([ended], EXEC_KILL_RETRY).done:
            return
        if time.monotonic() > deadline:
            logger.warning(
                "exec %s in %s still runs %gs after its first kill (last failure: %s)",
                exec_id,
                container_id,
                EXEC_KILL_PATIENCE,
                failure or "none",
            )
            return


def _resize_pty(client: ttrpc.Service, container_id: str, exec_id: str, width: int, height: int) -> None:
    with contextlib.suppress(ttrpc.TTRPCError):
        request = task_pb2.ResizePtyRequest(id=container_id, exec_id=exec_id, width=width, height=height)
        client.call("ResizePty", request, task_pb2.Empty, CALL_TIMEOUT)


def _close_input(client: ttrpc.Service, container_id: str, exec_id: str) -> None:
    """The process's input ends: the shim closes its own writer of the stdin FIFO."""
    with contextlib.suppress(ttrpc.TTRPCError):
        request = task_pb2.CloseIORequest(id=container_id, exec_id=exec_id, stdin=True)
        client.call("CloseIO", request, task_pb2.Empty, CALL_TIMEOUT)
