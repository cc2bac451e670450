"""ttrpc, the RPC protocol of containerd's shims: the client hulld calls a shim with.

A connection is a Unix socket carrying frames (``framing``). A call is a stream: the client sends
a Request frame (service, method, protobuf payload) on a new odd stream ID, the server answers with one Response
frame (a status and a payload) on the same ID. Calls on one connection run concurrently, so a ``Wait`` that
lasts as long as its container does not hold up the others. hulld uses unary calls only; frames of other
types are refused. (github.com/containerd/ttrpc, PROTOCOL.md.)
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from hulld.runtimes.shim.framing import REQUEST, RESPONSE, frame, read_frame
from hulld.runtimes.shim.protocol import ttrpc_pb2

logger = logging.getLogger(__name__)

NOT_FOUND, UNIMPLEMENTED = 5, 12
"""gRPC status codes (ttrpc's Status carries them): "no such container or process", "no such service"."""

M = TypeVar("M", bound=Message)


class TTRPCError(Exception):
    """The call failed: the server's status (``code`` is a gRPC code), or the connection (code None)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Client:
    """One connection to a ttrpc server. Thread-safe; a reader thread completes the calls as answers arrive."""

    def __init__(self, address: Path, timeout: float = 10.0) -> None:
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        try:
            self._socket.connect(str(address))
        except OSError:
            self._socket.close()
            raise
        self._socket.settimeout(None)
        self._streams = itertools.count(1, 2)  # client-initiated streams are odd
        self._pending: dict[int, Future[bytes]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"ttrpc {address.name}", daemon=True)
        self._reader.start()

    def call_async(self, service: str, method: str, request: Message, answer_type: type[M]) -> Future[M]:
        """Start a call; the future completes with the answer, or a TTRPCError."""
        payload = ttrpc_pb2.Request(service=service, method=method, payload=request.SerializeToString())
        answer: Future[M] = Future()
        raw: Future[bytes] = Future()
        raw.add_done_callback(lambda done: _decode(done, answer, answer_type, f"{service}/{method}"))
        data = payload.SerializeToString()
        # A stream ID is taken and sent under one lock: the server refuses an ID lower than one it has seen
        # ("StreamID cannot be re-used and must increment"), which two callers sending in turn could otherwise cause.
        with self._send_lock:
            with self._lock:
                if self.closed.is_set():
                    raise TTRPCError(f"the connection to {self.address} is closed")
                stream = next(self._streams)
                self._pending[stream] = raw
            try:
                self._socket.sendall(frame(stream, REQUEST, data))
            except (OSError, ValueError) as error:
                self._fail_all(f"sending to {self.address}: {error}")
        return answer

    def call(self, service: str, method: str, request: Message, answer_type: type[M], timeout: float = 60.0) -> M:
        try:
            return self.call_async(service, method, request, answer_type).result(timeout)
        except TimeoutError:
            raise TTRPCError(f"{service}/{method}: no answer in {timeout:g}s") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        self._fail_all("the connection was closed")

    def _read(self) -> None:
        try:
            while True:
                stream, kind, data = read_frame(self._socket)
                with self._lock:
                    pending = self._pending.pop(stream, None)
                if pending is None:
                    logger.warning("ttrpc %s: an answer on unknown stream %d", self.address, stream)
                elif kind != RESPONSE:
                    pending.set_exception(TTRPCError(f"a frame of type {kind} where a response was due"))
                else:
                    pending.set_result(data)
        except (OSError, ConnectionError) as error:
            self._fail_all(f"the connection to {self.address} ended: {error}")

    def _fail_all(self, reason: str) -> None:
        with self._lock:
            self.closed.set()
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(TTRPCError(reason))


def _decode(raw: Future[bytes], answer: Future[M], answer_type: type[M], call: str) -> None:
    error = raw.exception()
    if error is not None:
        answer.set_exception(error)
        return
    try:
        response = ttrpc_pb2.Response.FromString(raw.result())
        if response.status.code != 0:
            answer.set_exception(TTRPCError(f"{call}: {response.status.message}", response.status.code))
            return
        answer.set_result(answer_type.FromString(response.payload))
    except DecodeError as decode_error:
        answer.set_exception(TTRPCError(f"{call}: an answer that is not a {answer_type.__name__}: {decode_error}"))


class Service:
    """One service of a connection, by name: what a caller that speaks to that service holds."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    @property
    def closed(self) -> threading.Event:
        return self.client.closed

    def call(self, method: str, request: Message, answer_type: type[M], timeout: float = 60.0) -> M:
        return self.client.call(self.name, method, request, answer_type, timeout)

    def call_async(self, method: str, request: Message, answer_type: type[M]) -> Future[M]:
        return self.client.call_async(self.name, method, request, answer_type)

    def close(self) -> None:
        self.client.close()
