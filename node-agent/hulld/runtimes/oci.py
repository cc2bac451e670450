"""OCI runtime handlers (runc, runsc, crun): the runtime's command line, each container under conmon.

conmon (Debian's, made for this) is the container's monitor: it runs ``<runtime> create``, holds the
container's stdio, writes the CRI log format, records the exit code in ``<exits>/<id>`` and an ``oom`` file
when the kernel OOM-killed the container, and outlives hulld. hulld talks to it only through those files, its
sync pipe at creation, and its ``ctl`` FIFO (to reopen the log).

The handler's ``options`` become the runtime's global flags: ``platform = "systrap"`` is ``--platform=systrap``,
``debugLog`` is ``--debug-log``; the runtime's ``--root`` is the handler's runtime_root.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import re
import select
import shlex
import signal as signals
import socket
import struct
import subprocess
import tempfile
import termios
import time
import tty as terminal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hulld import errors
from hulld.atomic import write_atomically
from hulld.config import HandlerConfig, StorageConfig
from hulld.node import cgroups
from hulld.node.cgroups.layout import Driver
from hulld.runtimes.attach import ConmonAttach
from hulld.runtimes.base import (
    EXEC_KILL_PATIENCE,
    EXEC_KILL_RETRY,
    ContainerPaths,
    ContainerStdio,
    ExecResult,
    ExitStatus,
    Handler,
    PortConnection,
    StdioSession,
    TerminalSize,
    recorded_exit,
)
from hulld.runtimes.output import CappedOutput

logger = logging.getLogger(__name__)

CONMON = "conmon"
CREATE_TIMEOUT = 120.0
GONE = re.compile(r"does not exist|not running|no such|container not found|process already finished", re.I)


def _flag(name: str) -> str:
    return "--" + re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


START_REQUEST = "start-request"
START_STATUS = "start-status"
STARTS_SANDBOX = "starts-sandbox"
"""Marks the bundle of a pod's first container (its infra), whose ``create`` starts the sandbox."""
START_TIMEOUT = 60.0
WAITER_READY_TIMEOUT = 30.0
EXEC_PID_TIMEOUT = 10.0


def waiting_wrapper(runtime: Path, global_args: list[str]) -> str:
    """A runtime for conmon to run in place of a sandbox runtime (runsc).

    conmon watches the process whose PID ``create`` writes to ``--pid-file``, and takes its exit status for
    the container's. A container that joins its pod's sandbox has no process of its own on the host (runsc
    writes the sandbox's PID, which is not conmon's child), and it takes its stdio from whoever runs
    ``start``. So after the real ``create`` this wrapper leaves behind, as conmon's child holding conmon's
    stdio, a process that waits for hulld's start request (a line on the bundle's ``start-request`` FIFO),
    runs ``start`` (its exit code goes to ``start-status``), then ``wait``s for the container and exits with
    its status (the runtime reports 128+N for a signal; 255: the container went without one).

    The pod's first container (its bundle marked ``starts-sandbox``) needs no waiter: its ``create`` starts
    the sandbox process, writes that PID, and exits, leaving the sandbox to conmon (a child subreaper), which
    then watches the sandbox itself — the pod ends when its sandbox does. Only the start is left to do, by a
    short-lived process. A ``runtime wait`` per pod saved is a sandbox runtime process fewer per pod (see
    docs/hulld.md, benchmark). Every other command goes to the runtime as it is."""
    runtime_argv = " ".join(shlex.quote(argument) for argument in [str(runtime), *global_args])
    return f"""#!/bin/sh
# Written by hulld (hulld/runtimes/oci.py: waiting_wrapper): conmon's runtime for a sandbox runtime.
case " $* " in
*" create "*) ;;
*) exec {shlex.quote(str(runtime))} "$@" ;;
esac
pidfile=""
bundle=""
take=""
for argument; do
    case "$take" in
    pidfile) pidfile="$argument" ;;
    bundle) bundle="$argument" ;;
    esac
    take=""
    case "$argument" in
    --pid-file) take=pidfile ;;
    --pid-file=*) pidfile="${{argument#--pid-file=}}" ;;
    --bundle | -b) take=bundle ;;
    --bundle=*) bundle="${{argument#--bundle=}}" ;;
    esac
done
container="$argument"
exec 3<&0
{shlex.quote(str(runtime))} "$@" || exit $?
if [ -e "$bundle/{STARTS_SANDBOX}" ]; then  # conmon watches the sandbox, whose PID create wrote
    (
        read -r _ <"$bundle/{START_REQUEST}" || exit 0
        {runtime_argv} start "$container"
        echo $? >"$bundle/{START_STATUS}"
    ) </dev/null >/dev/null 2>&1 &
    exit 0
fi
(
    read -r _ <"$bundle/{START_REQUEST}" || exit 255  # end of file: deleted without a start
    {runtime_argv} start "$container"
    echo $? >"$bundle/{START_STATUS}"
    exec </dev/null >/dev/null 2>&1
    until status=$({runtime_argv} wait "$container" 2>&1); do
        case "$status" in
        *"not started"*) sleep 0.05 ;;
        *) exit 255 ;;
        esac
    done
    code=${{status##*exitStatus?:}}  # {{"id":"...","exitStatus":N}}
    code=${{code%%[!0-9]*}}
    exit "${{code:-255}}"
) <&3 3<&- &  # the container's input is conmon's (a background list's own would be /dev/null)
echo $! >"$pidfile"
"""


class OCIHandler(Handler):
    def __init__(self, name: str, config: HandlerConfig, storage: StorageConfig, cgroup_driver: Driver) -> None:
        state = storage.state
        self.name = name
        self._sandbox_per_pod = config.sandbox_per_pod
        self.path = config.runtime_path
        self.root = config.runtime_root or state / "runtimes" / name
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.attach_dir = state / "attach"
        self.attach_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.global_args = [
            f"--root={self.root}",
            *(["--systemd-cgroup"] if cgroup_driver == "systemd" else []),
            *(f"{_flag(option)}={value}" for option, value in sorted(config.options.items())),
        ]
        self.monitored = self.path
        """What conmon runs as the runtime: the runtime itself, or for a sandbox runtime the waiting wrapper."""
        if self._sandbox_per_pod:
            # Under the persistent root, not the volatile state: a node's /run is mounted noexec.
            self.monitored = storage.root / "runtimes" / f"{name}.conmon-runtime"
            self.monitored.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            wrapper = waiting_wrapper(self.path, self.global_args)
            if not self.monitored.is_file() or self.monitored.read_text() != wrapper:
                write_atomically(self.monitored, wrapper)
                self.monitored.chmod(0o700)

    @property
    def sandbox_per_pod(self) -> bool:
        return self._sandbox_per_pod

    def close(self) -> None:
        """Nothing to let go: conmon holds each container, hulld only its files."""

    def _runtime(
        self, *args: str, timeout: float = 60, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        if not self.path.is_file():
            raise errors.FailedPrecondition(f"runtime handler {self.name}: {self.path} does not exist")
        return subprocess.run(
            [str(self.path), *self.global_args, *args], input=stdin, capture_output=True, timeout=timeout, check=False
        )

    def _checked(self, *args: str) -> None:
        result = self._runtime(*args)
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip() or result.stdout.decode(errors="replace")
            raise errors.FailedPrecondition(f"{self.name} {args[0]}: {message.strip()}")

    def create(self, container_id: str, name: str, paths: ContainerPaths, sandbox: str, stdio: ContainerStdio) -> int:
        if not self.path.is_file():
            raise errors.FailedPrecondition(f"runtime handler {self.name}: {self.path} does not exist")
        paths.exits.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths.persist.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._sandbox_per_pod:
            os.mkfifo(paths.bundle / START_REQUEST, 0o600)
            if container_id == sandbox:
                (paths.bundle / STARTS_SANDBOX).touch()
        log = f"k8s-file:{paths.log}" if paths.log else f"k8s-file:{paths.bundle / 'console.log'}"
        argv = [
            CONMON,
            "--api-version",
            "1",
            "--cid",
            container_id,
            "--cuuid",
            container_id,
            "--name",
            name,
            "--runtime",
            str(self.monitored),
            "--bundle",
            str(paths.bundle),
            "--container-pidfile",
            str(paths.bundle / "pidfile"),
            "--conmon-pidfile",
            str(paths.bundle / "conmon.pid"),
            "--exit-dir",
            str(paths.exits),
            "--persist-dir",
            str(paths.persist),
            "--socket-dir-path",
            str(self.attach_dir),
            "--log-path",
            log,
            "--log-level",
            "error",
            *(["--terminal"] if stdio.tty else []),
            *(["--stdin"] if stdio.stdin else []),
            *(["--leave-stdin-open"] if stdio.stdin and not stdio.stdin_once else []),
        ]
        for arg in self.global_args:
            argv += ["--runtime-arg", arg]
        read_end, write_end = os.pipe()
        try:
            monitor = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(write_end,),
                env={"_OCI_SYNCPIPE": str(write_end), "PATH": os.environ.get("PATH", "")},
                start_new_session=True,
                # conmon writes an "oom" marker into its working directory as well as its persist dir: keep
                # it in the container's bundle, not wherever hulld was started (a node's /, a checkout).
                cwd=paths.bundle,
            )
            os.close(write_end)
            write_end = -1
            answer = self._read_sync(read_end, monitor)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        pid = int(str(answer.get("data", -1)))
        if pid <= 0:
            message = str(answer.get("message", "")).strip() or "the runtime failed to create the container"
            raise errors.FailedPrecondition(f"{self.name} create: {message}")
        return pid

    @staticmethod
    def _read_sync(read_end: int, monitor: subprocess.Popen[bytes]) -> dict[str, object]:
        deadline = time.monotonic() + CREATE_TIMEOUT
        received = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_end], [], [], 0.5)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                received += chunk
                if b"\n" in received or received.rstrip().endswith(b"}"):
                    break
        with contextlib.suppress(subprocess.TimeoutExpired):
            monitor.wait(timeout=5)  # conmon's first process exits once the container exists
        if not received.strip():
            detail = (
                monitor.stderr.read().decode(errors="replace") if monitor.stderr and monitor.poll() is not None else ""
            )
            raise errors.FailedPrecondition(f"conmon gave no answer: {detail.strip()}")
        answer: dict[str, object] = json.loads(received.splitlines()[0])
        return answer

    def start(self, container_id: str, paths: ContainerPaths) -> None:
        if not self._sandbox_per_pod:
            self._checked("start", container_id)
            return
        # The waiting wrapper starts it, with conmon's stdio (see waiting_wrapper).
        request = self._open_start_request(container_id, paths)
        if request is None:
            raise errors.FailedPrecondition(f"{self.name} start: the container's monitor is gone")
        try:
            os.write(request, b"start\n")
        finally:
            os.close(request)
        status = paths.bundle / START_STATUS
        deadline = time.monotonic() + START_TIMEOUT
        while not status.is_file() or not status.read_text().strip():
            if time.monotonic() > deadline:
                raise errors.DeadlineExceeded(f"{self.name} start: no answer in {START_TIMEOUT:.0f}s")
            time.sleep(0.005)
        code = status.read_text().strip()
        if code != "0":
            raise errors.FailedPrecondition(f"{self.name} start failed (exit {code}); see the container's log")

    def signal(self, container_id: str, signal: int, paths: ContainerPaths) -> None:
        if self._sandbox_per_pod and signal == signals.SIGKILL and not (paths.bundle / START_STATUS).exists():
            self._release_waiter(container_id, paths)  # never started: no process to kill, only its waiting wrapper
            if not (paths.bundle / STARTS_SANDBOX).exists():
                return  # (a sandbox, created, runs: it is killed below)
        result = self._runtime("kill", container_id, str(signal))
        if result.returncode != 0 and not GONE.search(result.stderr.decode(errors="replace")):
            raise errors.FailedPrecondition(f"{self.name} kill: {result.stderr.decode(errors='replace').strip()}")

    @staticmethod
    def _open_start_request(container_id: str, paths: ContainerPaths) -> int | None:
        """The start FIFO opened for writing; None if no waiting wrapper reads it (exited, or never there). The
        wrapper opens the FIFO for reading in the background after ``create`` returned: until it has, opening it
        for writing fails with ENXIO (under load, for a while), so wait for it — or for the exit its conmon
        records, or WAITER_READY_TIMEOUT."""
        deadline = time.monotonic() + WAITER_READY_TIMEOUT
        while True:
            try:
                return os.open(paths.bundle / START_REQUEST, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                gone = recorded_exit(paths.exits, container_id) is not None
                if error.errno != errno.ENXIO or gone or time.monotonic() > deadline:
                    return None
            time.sleep(0.005)

    @classmethod
    def _release_waiter(cls, container_id: str, paths: ContainerPaths) -> None:
        """End of file on the start FIFO: the waiting wrapper of a container never started exits (255), and
        with it the container's conmon, which records that exit."""
        if (paths.bundle / START_STATUS).exists():
            return  # started: nothing waits
        request = cls._open_start_request(container_id, paths)
        if request is not None:
            os.close(request)

    def running(self, container_id: str) -> bool:
        result = self._runtime("state", container_id)
        if result.returncode != 0:
            return False
        return bool(json.loads(result.stdout).get("status") == "running")

    def exit_status(self, container_id: str, paths: ContainerPaths) -> ExitStatus | None:
        recorded = recorded_exit(paths.exits, container_id)
        if recorded is None:
            return None
        return ExitStatus(*recorded, oom_killed=(paths.persist / "oom").exists())

    def delete(self, container_id: str, paths: ContainerPaths) -> None:
        (self.attach_dir / container_id).unlink(missing_ok=True)  # conmon's link to the attach socket
        result = self._runtime("delete", "--force", container_id)
        if result.returncode != 0 and not GONE.search(result.stderr.decode(errors="replace")):
            raise errors.FailedPrecondition(f"{self.name} delete: {result.stderr.decode(errors='replace').strip()}")
        if self._sandbox_per_pod:
            self._release_waiter(container_id, paths)  # deleted before its start, its waiting wrapper still waits

    @functools.cached_property
    def _exec_help(self) -> bytes:
        result = self._runtime("exec", "--help", timeout=10)
        return result.stdout + result.stderr

    @property
    def _exec_has_internal_pid(self) -> bool:
        """Runtimes with a PID space of their own (runsc) report the exec'd process's PID in it, and take
        ``kill --pid`` for it; runc's exec pid file holds the host PID. Asked of the runtime, not assumed."""
        return b"internal-pid-file" in self._exec_help

    @property
    def _exec_takes_tty_flag(self) -> bool:
        """runc asks for a terminal with ``--tty``; runsc has no such flag and sees that its stdio is one."""
        return b"--tty" in self._exec_help

    def _exec_argv(self, container_id: str, command: list[str], pid_file: Path, *, tty: bool = False) -> list[str]:
        if not command:
            raise errors.InvalidArgument("exec needs a command")
        pid_flag = "--internal-pid-file" if self._exec_has_internal_pid else "--pid-file"
        terminal = ["--tty"] if tty and self._exec_takes_tty_flag else []
        return [str(self.path), *self.global_args, "exec", *terminal, f"{pid_flag}={pid_file}", container_id, *command]

    def _kill_exec(self, container_id: str, pid_file: Path, running: Callable[[], bool]) -> None:
        """Kill an exec'd command inside the container, and let `runtime exec` reap it (killing that first would
        leave the command running, or a zombie). The runtime writes the command's PID once it runs: a slow start
        (seen under emulation: more than the exec's 1 s timeout) is waited for while ``running`` (the `runtime
        exec`), up to EXEC_PID_TIMEOUT. In a sandbox (runsc) the kill is `runtime kill`, which can fail: one that
        fails, or that the command outlives, is logged and sent again while it runs, up to EXEC_KILL_PATIENCE."""
        deadline = time.monotonic() + EXEC_PID_TIMEOUT
        while True:
            try:
                pid = int(pid_file.read_text())
                break
            except (OSError, ValueError):  # not written yet, or half
                if not running() or time.monotonic() > deadline:
                    return
                time.sleep(0.01)
        if not self._exec_has_internal_pid:
            with contextlib.suppress(OSError):  # runc's: a host PID, which a signal reaches for sure
                os.kill(pid, signals.SIGKILL)
            return
        deadline = time.monotonic() + EXEC_KILL_PATIENCE
        failure = ""
        while running():
            failure = self._kill_in_sandbox(container_id, pid, max(1.0, deadline - time.monotonic()))
            if failure and running():
                logger.warning("%s: kill of exec'd PID %s in %s failed: %s", self.name, pid, container_id, failure)
            retry = time.monotonic() + EXEC_KILL_RETRY
            while running() and time.monotonic() < retry:
                time.sleep(0.02)
            if running() and time.monotonic() > deadline:
                logger.warning(
                    "%s: exec'd PID %s in %s still runs %gs after its first kill (last failure: %s)",
                    self.name,
                    pid,
                    container_id,
                    EXEC_KILL_PATIENCE,
                    failure or "none",
                )
                return

    def _kill_in_sandbox(self, container_id: str, pid: int, timeout: float) -> str:
        """`runtime kill --pid` for a PID in the sandbox's own PID space; what failed, or "" once it is sent."""
        try:
            result = self._runtime("kill", f"--pid={pid}", container_id, "KILL", timeout=timeout)
        except (OSError, subprocess.TimeoutExpired, errors.HulldError) as error:
            return str(error) or type(error).__name__
        if result.returncode == 0:
            return ""
        return result.stderr.decode(errors="replace").strip() or f"exit status {result.returncode}"

    def exec_sync(self, container_id: str, command: list[str], timeout: float) -> ExecResult:
        pid_file = self.root / f"exec-{container_id}-{time.monotonic_ns()}.pid"
        argv = self._exec_argv(container_id, command, pid_file)
        (stdout_read, stdout_write), (stderr_read, stderr_write) = os.pipe(), os.pipe()
        output = CappedOutput({"stdout": stdout_read, "stderr": stderr_read})
        try:
            process = subprocess.Popen(argv, stdout=stdout_write, stderr=stderr_write, stdin=subprocess.DEVNULL)
        except BaseException:
            output.close()
            raise
        finally:
            os.close(stdout_write)
            os.close(stderr_write)
        drain = 10.0  # how long the output may stay open after the command ended (a child of it may hold it)
        try:
            process.wait(timeout=timeout or None)
        except subprocess.TimeoutExpired:
            drain = 1.0
            self._kill_exec(container_id, pid_file, lambda: process.poll() is None)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise errors.DeadlineExceeded(f"ExecSync {command[0]!r} timed out after {timeout:g}s") from None
        finally:
            pid_file.unlink(missing_ok=True)
            kept = output.result(drain)
            output.close()
        return ExecResult(stdout=kept["stdout"], stderr=kept["stderr"], exit_code=process.returncode)

    def exec(
        self, container_id: str, command: list[str], *, tty: bool, stdin: bool, size: TerminalSize | None
    ) -> StdioSession:
        pid_file = self.root / f"exec-{container_id}-{time.monotonic_ns()}.pid"
        argv = self._exec_argv(container_id, command, pid_file, tty=tty)
        kill = functools.partial(self._kill_exec, container_id, pid_file)
        return _InteractiveExec(argv, tty=tty, stdin=stdin, size=size, kill=kill, pid_file=pid_file)

    def attach(
        self, container_id: str, paths: ContainerPaths, *, stdin: bool, tty: bool, size: TerminalSize | None
    ) -> StdioSession:
        attached = ConmonAttach(self.attach_dir / container_id, paths.bundle / "ctl", stdin=stdin, tty=tty)
        if tty and size is not None:
            attached.resize(*size)
        return attached

    def connect(self, sandbox: str, network: Path | None, port: int) -> PortConnection:
        if not self._sandbox_per_pod:
            return super().connect(sandbox, network, port)
        # The sandbox has a network stack of its own (gVisor's netstack): the pod's loopback is inside it.
        # ``runsc port-forward --stream`` connects to our socket and hands its end to the sandbox, which
        # connects it to the port.
        with tempfile.TemporaryDirectory(dir=self.attach_dir, prefix="pf") as directory:
            path = Path(directory) / "s"  # a socket's path is at most 107 bytes
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(str(path))
                listener.listen(1)
                listener.settimeout(10)
                result = self._runtime("port-forward", f"--stream={path}", sandbox, str(port), timeout=30)
                if result.returncode != 0:
                    message = result.stderr.decode(errors="replace").strip().splitlines()
                    raise errors.FailedPrecondition(
                        f"{self.name} port-forward to port {port}: {message[-1] if message else 'failed'}"
                    )
                connection, _ = listener.accept()
        connection.settimeout(None)
        return PortConnection(connection, half_close=False)

    def usage(self, container_id: str, cgroups_path: str) -> cgroups.Usage:
        if not self._sandbox_per_pod:
            return super().usage(container_id, cgroups_path)
        return _sandbox_usage(self._sandbox_json("events", "--stats", container_id).get("data"))

    def measure(self, container_id: str, cgroups_path: str) -> tuple[cgroups.Usage, cgroups.Details]:
        if not self._sandbox_per_pod:
            return super().measure(container_id, cgroups_path)
        # Of the rest, a sandbox tells its processes (their PIDs inside it) and its tasks (threads).
        data = self._sandbox_json("events", "--stats", container_id).get("data")
        processes = self._sandbox_json("ps", "--format=json", container_id)
        details = cgroups.Details(
            processes=len(processes) if isinstance(processes, list) else None,
            threads=data.get("pids", {}).get("current", 0) if data else None,
        )
        return _sandbox_usage(data), details

    def _sandbox_json(self, *args: str) -> Any:
        """A runsc command's JSON answer (empty when the container went meanwhile)."""
        result = self._runtime(*args, timeout=10)
        try:
            if result.returncode == 0:
                return json.loads(result.stdout)
        except ValueError:
            pass
        logger.info("%s %s: %s", self.name, args[0], result.stderr.decode(errors="replace").strip()[-500:])
        return {}

    def version(self) -> str:
        result = self._runtime("--version", timeout=10)
        return result.stdout.decode(errors="replace").splitlines()[0] if result.returncode == 0 else ""

    def reopen_log(self, container_id: str, paths: ContainerPaths) -> None:
        control = paths.bundle / "ctl"
        try:
            descriptor = os.open(control, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            raise errors.FailedPrecondition(f"container {container_id} is not running: {error}") from error
        try:
            os.write(descriptor, b"2 0 0\n")  # conmon's "reopen the log file" message
        finally:
            os.close(descriptor)
        # conmon acts on it asynchronously; the kubelet's log rotation expects the new file once this returns.
        deadline = time.monotonic() + 5
        while paths.log is not None and not paths.log.exists():
            if time.monotonic() > deadline:
                raise errors.Unavailable(f"container {container_id}: the monitor did not reopen {paths.log}")
            time.sleep(0.01)

    def update_resources(self, container_id: str, resources: dict[str, object]) -> None:
        result = self._runtime("update", "--resources", "-", container_id, stdin=json.dumps(resources).encode())
        if result.returncode != 0:
            raise errors.FailedPrecondition(f"{self.name} update: {result.stderr.decode(errors='replace').strip()}")


def _sandbox_usage(data: dict[str, Any] | None) -> cgroups.Usage:
    """A container's usage from ``runsc events --stats`` (its ``data``; None if it failed). A sandbox's
    containers are not host processes (their host cgroups stay empty): the sandbox accounts for them. gVisor
    knows no page cache apart from usage, so the working set is the usage. Its JSON leaves zeros out."""
    if not data:
        return cgroups.NO_USAGE
    memory = data.get("memory", {}).get("usage", {}).get("usage", 0)
    return cgroups.Usage(
        cpu_nanoseconds=data.get("cpu", {}).get("usage", {}).get("total", 0),
        memory_usage=memory,
        memory_working_set=memory,
        memory_rss=None,
    )


class _InteractiveExec(StdioSession):
    """`runtime exec` in the foreground with pipes, or with a terminal: a pseudo-terminal whose other end is
    the runtime's stdio, which it puts into raw mode and copies to and from the container's own terminal; a
    resize is set on it and announced to the runtime with SIGWINCH, as a terminal emulator would."""

    def __init__(
        self,
        argv: list[str],
        *,
        tty: bool,
        stdin: bool,
        size: TerminalSize | None,
        kill: Callable[[Callable[[], bool]], None],
        pid_file: Path,
    ) -> None:
        self._kill = kill
        self._pid_file = pid_file
        self._terminal: int | None = None
        if tty:
            main, other = os.openpty()
            # Only a conduit: the container's own terminal (runc's, gVisor's) echoes and translates, so this
            # one must not (runc puts it in raw mode itself, runsc does not).
            terminal.setraw(other)
            if size is not None:  # before the runtime starts: it sizes the container's terminal from this one
                _set_size(main, size)
            ends = {"stdin": other, "stdout": other, "stderr": other}
            self._terminal = main
            self.stdin, self.stdout, self.stderr = (os.dup(main) if stdin else None), main, None
        else:
            (in_read, in_write), (out_read, out_write), (err_read, err_write) = os.pipe(), os.pipe(), os.pipe()
            ends = {"stdin": in_read, "stdout": out_write, "stderr": err_write}
            self.stdin, self.stdout, self.stderr = in_write, out_read, err_read
            if not stdin:
                os.close(in_write)
                self.stdin = None
        try:
            self._process = subprocess.Popen(argv, **ends, start_new_session=True)  # type: ignore[call-overload]
        finally:
            for end in set(ends.values()):
                os.close(end)

    def wait(self) -> int:
        return int(self._process.wait())

    def resize(self, width: int, height: int) -> None:
        if self._terminal is not None:
            _set_size(self._terminal, (width, height))
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signals.SIGWINCH)

    def end_input(self) -> None:
        if self.stdin is None:
            return
        if self._terminal is not None:
            with contextlib.suppress(OSError):
                os.write(self.stdin, b"\x04")  # a terminal's end of input is ^D, not a closed descriptor
            return
        os.close(self.stdin)
        self.stdin = None

    def kill(self) -> None:
        if self._running():
            self._kill(self._running)

    def _running(self) -> bool:
        return self._process.poll() is None

    def close(self) -> None:
        self._close_descriptors()
        self._pid_file.unlink(missing_ok=True)


def _set_size(terminal: int, size: TerminalSize) -> None:
    width, height = size
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
