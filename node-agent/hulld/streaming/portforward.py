"""Kubernetes' port-forward protocol (``portforward.k8s.io``) over SPDY: TCP connections into a pod.

One SPDY connection carries any number of forwarded connections, each a pair of client-opened streams with the
same ``requestid`` header: ``streamtype: error`` and ``streamtype: data``, both naming the pod's ``port``. Once a
pair is complete, hulld connects to that port on the pod's loopback and copies bytes both ways on the data
stream. A connection ends with our FIN on the error stream, then on the data stream. Anything written on the
error stream is a failure the client reports (and it then drops the whole session), so it carries only that:
``error forwarding port P to pod ID: why``. A stream without a valid port or type is reset unanswered; a pair
that stays incomplete gets an error after ``STREAM_TIMEOUT``. The session lasts until the client leaves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable

from hulld import errors
from hulld.runtimes.base import PortConnection
from hulld.streaming.spdy import Connection, Stream

logger = logging.getLogger(__name__)

PROTOCOL = "portforward.k8s.io"
STREAM_TIMEOUT = 30.0
READ_SIZE = 32 * 1024


@dataclasses.dataclass(frozen=True)
class PortForwardRequest:
    """Ports are not part of it: over SPDY each connection names its port (the CRI request's list is empty from
    crictl and the kubelet), and any port of the pod may be forwarded, as with containerd and CRI-O."""

    sandbox_id: str
    handler: str


Connect = Callable[[int], PortConnection]
"""A connection to a port on the pod's loopback."""


@dataclasses.dataclass
class _Pair:
    port: int
    opened: float
    streams: dict[str, Stream] = dataclasses.field(default_factory=dict)


def port_of(stream: Stream) -> int | None:
    """The stream's ``port`` header, if it is a port (1-65535)."""
    value = stream.headers.get("port", "")
    if not value.isdigit() or not 0 < int(value) < 65536:
        return None
    return int(value)


class PortForwardSession:
    def __init__(self, request: PortForwardRequest, connect: Connect) -> None:
        self.request = request
        self._connect = connect
        self._lock = threading.Lock()
        self._pairs: dict[str, _Pair] = {}
        """Incomplete pairs by request ID."""
        self._targets: set[socket.socket] = set()
        self.failed = 0

    def accept(self, stream: Stream) -> bool:
        port = port_of(stream)
        if port is None or stream.type not in ("data", "error"):
            logger.info("streaming: port-forward stream %d refused (headers %s)", stream.id, stream.headers)
            return False
        # Clients too old to send a request ID pair an error stream with the data stream opened next.
        request_id = stream.headers.get("requestid") or str(stream.id if stream.type == "error" else stream.id - 2)
        with self._lock:
            pair = self._pairs.setdefault(request_id, _Pair(port, time.monotonic()))
            duplicate = stream.type in pair.streams or pair.port != port
            if not duplicate:
                pair.streams[stream.type] = stream
            complete = len(pair.streams) == 2
            if complete:
                del self._pairs[request_id]
        if duplicate:
            self._fail(pair, f"request {request_id}: a second {stream.type} stream or another port ({port})")
            return False
        if complete:
            threading.Thread(target=self._forward, args=(pair,), name=f"port-forward {port}", daemon=True).start()
        return True

    def run(self, connection: Connection) -> str:
        """Serve until the client leaves; how it went ("ok" or "error"), for the metrics."""
        while not connection.ended.wait(1.0):
            now = time.monotonic()
            with self._lock:
                stale = [key for key, pair in self._pairs.items() if now - pair.opened > STREAM_TIMEOUT]
                timed_out = [self._pairs.pop(key) for key in stale]
            for pair in timed_out:
                self._fail(pair, "timed out waiting for the other stream of the pair")
        with self._lock:
            targets = list(self._targets)
        for target in targets:  # the client is gone: so are its forwarded connections
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_RDWR)
        return "error" if self.failed else "ok"

    def _fail(self, pair: _Pair, why: str) -> None:
        self.failed += 1
        message = f"error forwarding port {pair.port} to pod {self.request.sandbox_id}: {why}"
        logger.info("streaming: %s", message)
        error = pair.streams.get("error")
        with contextlib.suppress(OSError):
            if error is not None:
                error.write(message.encode())
            for stream in pair.streams.values():
                stream.reset()

    def _forward(self, pair: _Pair) -> None:
        try:
            connection = self._connect(pair.port)
        except (OSError, errors.HulldError) as failure:
            self._fail(pair, str(failure))
            return
        target = connection.socket
        data, error = pair.streams["data"], pair.streams["error"]
        with self._lock:
            self._targets.add(target)
        inbound = threading.Thread(target=self._copy_in, args=(data, connection), name="port-forward in", daemon=True)
        inbound.start()
        try:
            while chunk := _receive(target):
                data.write(chunk)
        except OSError:
            pass  # the client's side is gone; it resets the stream itself
        finally:
            with contextlib.suppress(OSError):
                error.close()
                data.close()
            inbound.join()
            with self._lock:
                self._targets.discard(target)
            target.close()

    @staticmethod
    def _copy_in(data: Stream, connection: PortConnection) -> None:
        """The client's bytes to the pod; its FIN half-closes the pod's connection (where it can be), a reset
        ends it."""
        target = connection.socket
        try:
            while chunk := data.read():
                target.sendall(chunk)
            if data.reset_by_client:
                target.shutdown(socket.SHUT_RDWR)
            elif connection.half_close:
                target.shutdown(socket.SHUT_WR)
        except OSError:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_RDWR)


def _receive(target: socket.socket) -> bytes:
    try:
        return target.recv(READ_SIZE)
    except ConnectionResetError:
        return b""
