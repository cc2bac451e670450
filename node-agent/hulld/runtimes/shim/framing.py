"""ttrpc's frames, with nothing but the standard library (the event recorder runs on it alone).

A frame is a 10-byte header (data length and stream ID, big-endian 32-bit; message type and flags, a byte
each) and at most 4 MiB of data (github.com/containerd/ttrpc, PROTOCOL.md).
"""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct(">IIBB")
MAX_DATA = 4 << 20
REQUEST, RESPONSE = 1, 2


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        data += chunk
    return bytes(data)


def read_frame(connection: socket.socket) -> tuple[int, int, bytes]:
    """(stream ID, message type, data) of the next frame."""
    length, stream, kind, _flags = HEADER.unpack(_read_exactly(connection, HEADER.size))
    if length > MAX_DATA:
        raise ConnectionError(f"a frame of {length} bytes exceeds ttrpc's {MAX_DATA}-byte limit")
    return stream, kind, _read_exactly(connection, length)


def frame(stream: int, kind: int, data: bytes) -> bytes:
    if len(data) > MAX_DATA:
        raise ValueError(f"a message of {len(data)} bytes exceeds ttrpc's {MAX_DATA}-byte limit")
    return HEADER.pack(len(data), stream, kind, 0) + data
