"""SPDY/3.1 framing, as the kubelet and crictl speak it (their Go library, moby/spdystream), server side.

    control frame  |1|version=3 (15)|type (16)|  flags (8) | length (24) |  payload
    data frame     |0|stream id (31)          |  flags (8) | length (24) |  payload

Header blocks (SYN_STREAM, SYN_REPLY) are ``count, (name length, name, value length, value)*`` as 32-bit
lengths, compressed with zlib and SPDY's dictionary through one compressor per direction that lives as long as
the connection. The client opens every stream (odd IDs) and waits for each SYN_REPLY before the next; the server
never opens one. Flow control is not used by these peers (they never send WINDOW_UPDATE and ignore it), so none
is applied here: TCP's own backpressure is the only one. The client PINGs every 5 s; the server echoes.

Everything read comes from whoever holds a streaming token, so sizes are bounded: a frame is at most 16 MiB
(the format's own limit) and a decompressed header block at most 64 KiB.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Protocol

from hulld.streaming.dictionary import DICTIONARY

logger = logging.getLogger(__name__)

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
CANCEL = 5
PROTOCOL_ERROR = 1
MAX_HEADER_BLOCK = 64 * 1024
DATA_CHUNK = 32 * 1024


class ProtocolError(Exception):
    pass


class ByteStream(Protocol):
    """What a session runs on: the upgraded socket, or a WebSocket tunnelling SPDY (``websocket.Tunnel``)."""

    def recv(self, size: int, /) -> bytes: ...

    def sendall(self, data: bytes, /) -> None: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...


class Stream:
    """One client-opened stream: its headers, what the client sends on it (``read``), and our side of it."""

    def __init__(self, connection: Connection, stream_id: int, headers: dict[str, str]) -> None:
        self.connection = connection
        self.id = stream_id
        self.headers = headers
        self._incoming: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._closed = False  # our side: FIN or RST sent
        self.reset_by_client = False
        """The client reset the stream (RST_STREAM), rather than finishing its side (FIN)."""

    @property
    def type(self) -> str:
        return self.headers.get("streamtype", "")

    def read(self) -> bytes:
        """The next data the client sent; b"" once it closed its side (FIN, RST, or the connection ended)."""
        data = self._incoming.get()
        if data is None:
            self._incoming.put(None)  # every later read sees the end too
            return b""
        return data

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), DATA_CHUNK):
            self.connection.send_data(self.id, data[start : start + DATA_CHUNK], fin=False)

    def close(self, data: bytes = b"") -> None:
        """Our side ends (FIN), with ``data`` as its last bytes."""
        if not self._closed:
            self._closed = True
            self.connection.send_data(self.id, data, fin=True)

    def reset(self) -> None:
        if not self._closed:
            self._closed = True
            self.connection.send_control(RST_STREAM, 0, struct.pack(">II", self.id, CANCEL))

    def _deliver(self, data: bytes | None) -> None:
        self._incoming.put(data)


class Connection:
    """A SPDY session on an upgraded connection. ``accept`` decides each new stream: True replies to it, False
    resets it. ``run`` reads frames until the client goes; writes come from any thread."""

    def __init__(self, sock: ByteStream, pending: bytes, accept: Callable[[Stream], bool]) -> None:
        self.socket = sock
        self._buffer = bytearray(pending)
        self._accept = accept
        self._streams: dict[int, Stream] = {}
        self._write_lock = threading.RLock()  # held across compressing and sending a header block
        self._deflate = zlib.compressobj(zdict=DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._last_stream = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.ended = threading.Event()

    # --- reading ----------------------------------------------------------------------------------------------

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self.socket.recv(65536)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def run(self) -> None:
        """Read frames until end of file, a GOAWAY or a protocol error; then every stream's reader sees its end."""
        try:
            while True:
                first, second = struct.unpack(">II", self._read_exactly(8))
                flags, length = second >> 24, second & 0xFFFFFF
                payload = self._read_exactly(length)
                self.bytes_in += 8 + length
                if first & 0x80000000:
                    if not self._control(first & 0xFFFF, flags, payload):
                        return
                else:
                    self._data(first & 0x7FFFFFFF, flags, payload)
        except (EOFError, OSError):
            return
        except ProtocolError as error:
            logger.warning("streaming: SPDY protocol error from the client: %s", error)
        finally:
            self.ended.set()
            for stream in list(self._streams.values()):
                stream._deliver(None)

    def _control(self, kind: int, flags: int, payload: bytes) -> bool:
        if kind == SYN_STREAM:
            if len(payload) < 10:
                raise ProtocolError("short SYN_STREAM")
            stream_id = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if stream_id % 2 == 0 or stream_id <= self._last_stream:
                raise ProtocolError(f"SYN_STREAM with stream ID {stream_id}")
            self._last_stream = stream_id
            stream = Stream(self, stream_id, self._headers(payload[10:]))
            if self._accept(stream):
                self._streams[stream_id] = stream
                with self._write_lock:  # blocks must reach the client in the order they were compressed
                    self.send_control(SYN_REPLY, 0, struct.pack(">I", stream_id) + self._header_block({}))
                if flags & FLAG_FIN:
                    stream._deliver(None)
            else:
                self.send_control(RST_STREAM, 0, struct.pack(">II", stream_id, CANCEL))
        elif kind == RST_STREAM:
            stream_id = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            closed = self._streams.pop(stream_id, None)
            if closed is not None:
                closed.reset_by_client = True
                closed._deliver(None)
        elif kind == PING:
            self.send_control(PING, 0, payload)  # the client's PINGs come back as they are
        elif kind == GOAWAY:
            return False
        # SETTINGS, WINDOW_UPDATE, HEADERS: nothing these peers rely on.
        return True

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a stream reset meanwhile
        if payload:
            stream._deliver(payload)
        if flags & FLAG_FIN:
            stream._deliver(None)

    def _headers(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as error:
            raise ProtocolError(f"a header block that does not inflate: {error}") from error
        if self._inflate.unconsumed_tail:
            raise ProtocolError(f"a header block over {MAX_HEADER_BLOCK} bytes")
        try:
            (count,) = struct.unpack_from(">I", raw, 0)
            offset, headers = 4, {}
            for _ in range(count):
                (size,) = struct.unpack_from(">I", raw, offset)
                name = raw[offset + 4 : offset + 4 + size].decode()
                offset += 4 + size
                (size,) = struct.unpack_from(">I", raw, offset)
                value = raw[offset + 4 : offset + 4 + size].decode()
                offset += 4 + size
                headers[name.lower()] = value.split("\0")[0]
        except (struct.error, UnicodeDecodeError) as error:
            raise ProtocolError(f"a malformed header block: {error}") from error
        return headers

    # --- writing ----------------------------------------------------------------------------------------------

    def _header_block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            raw += struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", len(value)) + value.encode()
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def _send(self, frame: bytes) -> None:
        with self._write_lock:
            self.socket.sendall(frame)
            self.bytes_out += len(frame)

    def send_control(self, kind: int, flags: int, payload: bytes) -> None:
        self._send(struct.pack(">HHI", 0x8003, kind, flags << 24 | len(payload)) + payload)

    def send_data(self, stream_id: int, data: bytes, *, fin: bool) -> None:
        self._send(struct.pack(">II", stream_id, (FLAG_FIN if fin else 0) << 24 | len(data)) + data)

    def close(self, linger: float = 5.0) -> None:
        """GOAWAY, our last frame; then half-close and let the client hang up (closing with its frames unread
        would make the kernel reset the connection, and the client could lose our last bytes)."""
        with contextlib.suppress(OSError):
            self.send_control(GOAWAY, 0, struct.pack(">II", self._last_stream, 0))
            self.socket.shutdown(socket.SHUT_WR)
        self.ended.wait(linger)
        self.socket.close()
