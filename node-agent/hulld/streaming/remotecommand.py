"""Kubernetes' remote-command protocol (``channel.k8s.io``, v1 to v4) over SPDY: an exec's or an attach's
streams and its end.

The client opens one stream per channel, each named by its ``streamtype`` header: ``error`` always, then
``stdin``, ``stdout``, ``stderr`` (not with a terminal) and, from v3 with a terminal, ``resize`` (a series of
``{"Width": W, "Height": H}`` JSON values). Which of them come follows from the CRI request the token names,
not from the HTTP request (the kubelet proxies to the URL as it is). The command starts once they are all
there. Its output goes out as DATA; the client's input comes in until it half-closes stdin. When the command
exits, stdout and stderr end, and the error stream carries the result and ends: from v4 a Kubernetes
``Status`` (a non-zero exit as ``NonZeroExitCode`` with an ``ExitCode`` cause, which ``kubectl exec`` turns
into its own exit code); before v4, plain text on failure and nothing on success. An attach is the same with
the container's own stdio: it ends when the container's output does (or the client goes, which detaches), and
reports success.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Protocol

from hulld import errors
from hulld.runtimes.base import StdioSession, TerminalSize

logger = logging.getLogger(__name__)

PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
"""What hulld speaks over SPDY, preferred first (v5 exists only over WebSocket: ``websocket.PROTOCOLS``)."""
WITH_RESIZE = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io")
WITH_STATUS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
"""Versions whose error channel carries a Kubernetes Status (before v4: text on failure, nothing on success)."""
STREAM_TIMEOUT = 30.0
FIRST_SIZE_WAIT = 1.0
"""How long the start waits for the client's terminal size (clients send it first), so that what runs starts
with the right one."""
OUTPUT_GRACE = 2.0
"""How long output may keep flowing after the command exited (a child it left behind may hold it open)."""
READ_SIZE = 32 * 1024


class Channel(Protocol):
    """One of the session's streams, whatever carries it (a SPDY stream, a WebSocket channel)."""

    @property
    def type(self) -> str: ...

    def read(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self, data: bytes = b"") -> None: ...


class Transport(Protocol):
    ended: threading.Event
    """Set when the client has gone."""


@dataclasses.dataclass(frozen=True)
class ExecRequest:
    container_id: str
    handler: str
    command: tuple[str, ...]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclasses.dataclass(frozen=True)
class AttachRequest:
    container_id: str
    handler: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


def status(exit_code: int | None, error: str = "") -> dict[str, object]:
    """The v4 error stream's Status: success, a non-zero exit code, or an internal error."""
    if error:
        return {"status": "Failure", "message": error, "reason": "InternalError", "code": 500}
    if exit_code == 0:
        return {"status": "Success"}
    return {
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


class RemoteCommandSession:
    """One exec or attach over one SPDY connection: collects the client's streams, starts the command (or
    attaches), reports its end."""

    def __init__(self, protocol: str, request: ExecRequest | AttachRequest) -> None:
        self.protocol = protocol
        self.request = request
        self.expected = {"error"}
        self.expected |= {"stdin"} if request.stdin else set()
        self.expected |= {"stdout"} if request.stdout else set()
        self.expected |= {"stderr"} if request.stderr and not request.tty else set()
        self.expected |= {"resize"} if request.tty and protocol in WITH_RESIZE else set()
        self.streams: dict[str, Channel] = {}
        self._all_there = threading.Event()
        self._sized = threading.Event()
        self._lock = threading.Lock()
        self._size: TerminalSize | None = None
        """The client's latest terminal size."""
        self._process: StdioSession | None = None

    def accept(self, stream: Channel) -> bool:
        """Every stream is answered; one of a type not expected (or seen before) is left unused."""
        if stream.type in self.expected and stream.type not in self.streams:
            self.streams[stream.type] = stream
            if set(self.streams) == self.expected:
                self._all_there.set()
        else:
            logger.info("streaming: an unexpected %r stream, ignored", stream.type)
        return True

    def run(self, connection: Transport, start: Callable[[TerminalSize | None], StdioSession]) -> str:
        """Serve the session; returns how it ended ("ok", "error" or "abandoned"), for the metrics. ``start``
        gets the client's terminal size, if it has one."""
        if not self._all_there.wait(STREAM_TIMEOUT):
            logger.warning("streaming: the client opened %s of %s streams", sorted(self.streams), sorted(self.expected))
            return "abandoned"
        if "resize" in self.streams:
            self._thread(self._resize, self.streams["resize"])
            self._sized.wait(FIRST_SIZE_WAIT)
        with self._lock:
            first_size = self._size
        try:
            process = start(first_size)
        except errors.HulldError as error:
            self._finish(None, f"error executing command in container: {error}")
            return "error"
        try:
            with self._lock:
                self._process = process
                latest_size = self._size
            if latest_size is not None and latest_size != first_size:
                self._apply_size(process, latest_size)
            pumps = [
                self._thread(self._copy_out, process.stdout, self.streams.get("stdout")),
                *([self._thread(self._copy_out, process.stderr, self.streams.get("stderr"))] if process.stderr else []),
            ]
            if "stdin" in self.streams:
                self._thread(self._copy_in, self.streams["stdin"], process)
            self._thread(self._abandon_when_gone, connection, process)
            exit_code = process.wait()
            for pump in pumps:
                pump.join(OUTPUT_GRACE)
        finally:
            process.close()
        self._finish(exit_code, "")
        return "ok"

    @staticmethod
    def _thread(target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=f"exec {target.__name__}", daemon=True)
        thread.start()
        return thread

    @staticmethod
    def _copy_out(descriptor: int, stream: Channel | None) -> None:
        while True:
            try:
                data = os.read(descriptor, READ_SIZE)
            except OSError:  # EIO: the terminal's other end is closed, its end of output
                data = b""
            if not data:
                break
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.write(data)
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()

    @staticmethod
    def _copy_in(stream: Channel, process: StdioSession) -> None:
        while data := stream.read():
            if process.stdin is None:
                continue
            try:
                os.write(process.stdin, data)
            except OSError:
                return  # the command stopped reading (it exited)
        process.end_input()

    def _resize(self, stream: Channel) -> None:
        """Sizes as they come: kept for the start, then applied to what runs."""
        decoder, buffer = json.JSONDecoder(), ""
        while data := stream.read():
            buffer += data.decode(errors="replace")
            while buffer.strip():
                try:
                    size, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break  # the rest of the value is still on its way
                buffer = buffer.lstrip()[end:]
                try:
                    width, height = int(size["Width"]), int(size["Height"])
                except (KeyError, TypeError, ValueError):
                    continue
                with self._lock:
                    self._size = (width, height)
                    process = self._process
                if process is not None:
                    self._apply_size(process, (width, height))
                self._sized.set()
        self._sized.set()

    @staticmethod
    def _apply_size(process: StdioSession, size: TerminalSize) -> None:
        with contextlib.suppress(OSError):
            process.resize(*size)

    @staticmethod
    def _abandon_when_gone(connection: Transport, process: StdioSession) -> None:
        """The client went away: the command has no one to talk to."""
        connection.ended.wait()
        with contextlib.suppress(OSError):
            process.kill()

    def _finish(self, exit_code: int | None, error: str) -> None:
        for name in ("stdout", "stderr"):
            if name in self.streams:
                with contextlib.suppress(OSError):
                    self.streams[name].close()
        if self.protocol in WITH_STATUS:
            message = json.dumps(status(exit_code, error and f"Internal error occurred: {error}")).encode()
        elif error or exit_code:
            message = (error or f"command terminated with non-zero exit code: exit status {exit_code}").encode()
        else:
            message = b""
        with contextlib.suppress(OSError):
            self.streams["error"].close(message)
