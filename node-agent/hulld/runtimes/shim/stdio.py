"""A shim's containers write their stdout and stderr into FIFOs; this copies them into CRI log files, and to
the clients attached to a container (``listen``: CRI Attach).

One thread serves every container of a handler. Each line becomes ``<RFC 3339 time> <stream> F <line>`` (the
kubelet's log format); a line longer than ``MAX_LINE`` is cut into ``P`` (partial) records and a final ``F``.
A stream ends when the shim closes its end of the FIFO (the container and its processes are gone).

Linux reports that end (POLLHUP) only to a reader that has seen a writer: a FIFO opened before the shim opens
it (``fresh``) waits for one; one reopened after a hulld restart finds the shim's end already open, or if the
container ended meanwhile, no writer at all, which a first read tells (it returns end of file).

An attached client gets the output as it comes, through pipes that are never waited on: one client that does
not keep up loses output (the log keeps all of it) rather than holding up every container's copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import logging
import os
import selectors
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_LINE = 16 * 1024
READ_SIZE = 64 * 1024
LISTENER_PIPE_SIZE = 1024 * 1024


def log_record(stream: str, tag: str, line: bytes) -> bytes:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"{now}000Z {stream} {tag} ".encode() + line + b"\n"


def open_fifo(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)


@dataclasses.dataclass
class _Stream:
    name: str
    """stdout or stderr"""
    descriptor: int
    owner: _Copy
    pending: bytes = b""


class Listener:
    """An attached client's view of a container's output: a pipe per stream (``outputs``: their read ends, the
    client's to read and close). ``ended`` is set once the container's output ended or the client detached;
    the pipes then read end of file."""

    def __init__(self, streams: list[str]) -> None:
        self.outputs: dict[str, int] = {}
        self._inputs: dict[str, int] = {}
        for name in streams:
            self.outputs[name], self._inputs[name] = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(self._inputs[name], False)
            with contextlib.suppress(OSError):  # a larger pipe loses less to a slow client; the default if refused
                fcntl.fcntl(self._inputs[name], fcntl.F_SETPIPE_SZ, LISTENER_PIPE_SIZE)
        self.ended = threading.Event()

    def _send(self, stream: str, data: bytes) -> None:
        descriptor = self._inputs.get(stream)
        if descriptor is not None:
            with contextlib.suppress(BlockingIOError, BrokenPipeError):  # a full pipe: this client loses it
                os.write(descriptor, data)

    def _end(self) -> None:
        for descriptor in self._inputs.values():
            os.close(descriptor)
        self._inputs.clear()
        self.ended.set()


@dataclasses.dataclass
class _Copy:
    log: Path | None
    log_descriptor: int = -1
    streams: list[_Stream] = dataclasses.field(default_factory=list)
    listeners: list[Listener] = dataclasses.field(default_factory=list)

    def open_log(self) -> None:
        if self.log_descriptor >= 0:
            os.close(self.log_descriptor)
            self.log_descriptor = -1
        if self.log is not None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            self.log_descriptor = os.open(self.log, flags, 0o640)

    def write(self, data: bytes) -> None:
        if self.log_descriptor >= 0:
            os.write(self.log_descriptor, data)


class LogCopier:
    def __init__(self, name: str) -> None:
        self.name = name
        self._copies: dict[str, _Copy] = {}
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name=f"{name} stdio", daemon=True)
        self._thread.start()

    def attach(self, key: str, fifos: dict[str, Path], log: Path | None, *, fresh: bool) -> None:
        """Copy ``fifos`` (stream name → FIFO) of container ``key`` into ``log`` (None: discard them)."""
        copy = _Copy(log=log)
        copy.open_log()
        for stream_name, path in fifos.items():
            descriptor = open_fifo(path)
            stream = _Stream(name=stream_name, descriptor=descriptor, owner=copy)
            if not fresh and not self._drain(stream):
                os.close(descriptor)
                continue  # no writer left: the container ended while nobody read
            copy.streams.append(stream)
        self.detach(key)
        with self._lock:
            self._copies[key] = copy
            for stream in copy.streams:
                self._selector.register(stream.descriptor, selectors.EVENT_READ, stream)
        self._wake()

    def listen(self, key: str) -> Listener | None:
        """Also send container ``key``'s output to a new listener; None if its output is not copied (any more)."""
        with self._lock:
            copy = self._copies.get(key)
            if copy is None or not copy.streams:
                return None
            listener = Listener([stream.name for stream in copy.streams])
            copy.listeners.append(listener)
            return listener

    def unlisten(self, key: str, listener: Listener) -> None:
        """The client detached: its pipes end."""
        with self._lock:
            copy = self._copies.get(key)
            if copy is not None and listener in copy.listeners:
                copy.listeners.remove(listener)
            if not listener.ended.is_set():
                listener._end()

    def attached(self, key: str) -> bool:
        with self._lock:
            return key in self._copies

    def reopen(self, key: str) -> bool:
        """Reopen the container's log file (after the kubelet rotated it); False if nothing is copied for it."""
        with self._lock:
            copy = self._copies.get(key)
            if copy is None:
                return False
            copy.open_log()
            return True

    def detach(self, key: str) -> None:
        with self._lock:
            copy = self._copies.pop(key, None)
            if copy is None:
                return
            for stream in copy.streams:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(stream.descriptor)
                self._flush(stream)
                os.close(stream.descriptor)
                stream.descriptor = -1
            copy.streams.clear()
            for listener in copy.listeners:
                listener._end()
            copy.listeners.clear()
            if copy.log_descriptor >= 0:
                os.close(copy.log_descriptor)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"x")

    def _run(self) -> None:
        while True:
            for key, _events in self._selector.select():
                stream = key.data
                if stream is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, 4096)
                    continue
                with self._lock:
                    if stream.descriptor < 0:
                        continue  # detached meanwhile
                    if not self._drain(stream):
                        self._end(stream)

    def _drain(self, stream: _Stream) -> bool:
        """Copy what the FIFO holds; False at its end (no writer left)."""
        while True:
            try:
                data = os.read(stream.descriptor, READ_SIZE)
            except BlockingIOError:
                return True
            except OSError as error:
                logger.warning("%s: reading a container's %s: %s", self.name, stream.name, error)
                return False
            if not data:
                return False
            self._copy(stream, data)

    def _copy(self, stream: _Stream, data: bytes) -> None:
        for listener in stream.owner.listeners:
            listener._send(stream.name, data)
        stream.pending += data
        records = []
        while True:
            line, newline, rest = stream.pending.partition(b"\n")
            if newline:
                records.append(log_record(stream.name, "F", line))
                stream.pending = rest
            elif len(stream.pending) >= MAX_LINE:
                records.append(log_record(stream.name, "P", stream.pending[:MAX_LINE]))
                stream.pending = stream.pending[MAX_LINE:]
            else:
                break
        if records:
            try:
                stream.owner.write(b"".join(records))
            except OSError as error:
                logger.warning("%s: writing %s: %s", self.name, stream.owner.log, error)

    def _flush(self, stream: _Stream) -> None:
        """The stream ended: its last line, even without a newline, is a full one."""
        if stream.pending:
            with contextlib.suppress(OSError):
                stream.owner.write(log_record(stream.name, "F", stream.pending))
            stream.pending = b""

    def _end(self, stream: _Stream) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(stream.descriptor)
        self._flush(stream)
        os.close(stream.descriptor)
        stream.owner.streams.remove(stream)
        stream.descriptor = -1
        if not stream.owner.streams:  # the container's output ended: so does its listeners'
            for listener in stream.owner.listeners:
                listener._end()
            stream.owner.listeners.clear()
