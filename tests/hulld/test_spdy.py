"""hulld's SPDY/3.1 reader against hostile input, over a socket pair: whoever holds a streaming token can send
anything. A malformed frame ends that connection (and only it) without an exception escaping; a header block
that inflates past its bound (a zip bomb) is refused before it is held in memory."""

from __future__ import annotations

import socket
import struct
import threading
import zlib
from collections.abc import Callable, Iterator

import pytest

from hulld.streaming.dictionary import DICTIONARY
from hulld.streaming.spdy import MAX_HEADER_BLOCK, PING, SYN_REPLY, SYN_STREAM, Connection, Stream


class Client:
    """The client's side: frames written by hand, with its own header compressor (one per connection)."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.deflate = zlib.compressobj(zdict=DICTIONARY)

    def control(self, kind: int, payload: bytes, flags: int = 0) -> None:
        self.socket.sendall(struct.pack(">HHI", 0x8003, kind, flags << 24 | len(payload)) + payload)

    def header_block(self, raw: bytes) -> bytes:
        return self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_stream(self, stream_id: int, headers: dict[str, str]) -> None:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            raw += struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", len(value)) + value.encode()
        self.control(SYN_STREAM, struct.pack(">IIH", stream_id, 0, 0) + self.header_block(raw))

    def cut_short(self) -> None:
        """A frame that says 8 MiB follow, 100 bytes, and the end of the connection."""
        self.socket.sendall(struct.pack(">HHI", 0x8003, PING, 1 << 23) + b"x" * 100)
        self.socket.shutdown(socket.SHUT_WR)

    def frame(self) -> tuple[int, bytes]:
        """The next control frame from the server: (type, payload)."""
        head = self._exactly(8)
        first, second = struct.unpack(">II", head)
        assert first & 0x80000000, "a data frame, not a control frame"
        return first & 0xFFFF, self._exactly(second & 0xFFFFFF)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.socket.recv(size - len(data))
            assert chunk, "the server closed the connection"
            data += chunk
        return data


def serve_in_thread(run: Callable[[], None], ours: socket.socket, theirs: socket.socket) -> Iterator[threading.Thread]:
    """``run`` (a connection's reader) in a thread as the server runs it; afterwards, nothing escaped it."""
    escaped: list[BaseException] = []

    def read() -> None:
        try:
            run()
        except BaseException as error:  # what would kill the server's reader thread
            escaped.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    yield reader
    theirs.close()
    reader.join(5)
    ours.close()
    assert escaped == []


@pytest.fixture
def session() -> Iterator[tuple[Client, Connection, list[Stream], threading.Thread]]:
    ours, theirs = socket.socketpair()
    accepted: list[Stream] = []

    def accept(stream: Stream) -> bool:
        accepted.append(stream)
        return True

    connection = Connection(ours, b"", accept)
    for reader in serve_in_thread(connection.run, ours, theirs):
        yield Client(theirs), connection, accepted, reader


def test_a_well_formed_session_is_served(session: tuple[Client, Connection, list[Stream], threading.Thread]) -> None:
    client, connection, accepted, _ = session
    client.syn_stream(1, {"streamtype": "error", "Port": "80\x0081"})
    kind, payload = client.frame()
    assert (kind, struct.unpack(">I", payload[:4])[0]) == (SYN_REPLY, 1)
    assert accepted[0].headers == {"streamtype": "error", "port": "80"}  # names lowercased, first value
    client.control(PING, struct.pack(">I", 7))
    assert client.frame() == (PING, struct.pack(">I", 7))
    client.socket.sendall(struct.pack(">II", 99, 3) + b"abc")  # data for a stream that does not exist: dropped
    client.control(PING, struct.pack(">I", 9))
    assert client.frame() == (PING, struct.pack(">I", 9))
    assert not connection.ended.is_set()


def inflating_bomb() -> bytes:
    """A header block that is a few KiB on the wire and megabytes inflated."""
    return struct.pack(">I", 1) + struct.pack(">I", 4) + b"name" + struct.pack(">I", 8 << 20) + b"a" * (8 << 20)


HOSTILE: dict[str, Callable[[Client], object]] = {
    "a short SYN_STREAM": lambda client: client.control(SYN_STREAM, b"\x00\x00\x00\x01"),
    "an even stream ID": lambda client: client.syn_stream(2, {"streamtype": "data"}),
    "a header count beyond the block": lambda client: client.control(
        SYN_STREAM, struct.pack(">IIH", 1, 0, 0) + client.header_block(struct.pack(">I", 1000))
    ),
    "a header length beyond the block": lambda client: client.control(
        SYN_STREAM, struct.pack(">IIH", 1, 0, 0) + client.header_block(struct.pack(">II", 1, 1 << 30))
    ),
    "a header block that is not zlib": lambda client: client.control(
        SYN_STREAM, struct.pack(">IIH", 1, 0, 0) + b"\xff" * 64
    ),
    "a header block inflating past its bound": lambda client: client.control(
        SYN_STREAM, struct.pack(">IIH", 1, 0, 0) + client.header_block(inflating_bomb())
    ),
    "a frame cut short": lambda client: client.cut_short(),
}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_frames_end_the_connection_and_nothing_else(
    session: tuple[Client, Connection, list[Stream], threading.Thread], hostile: str
) -> None:
    client, connection, accepted, reader = session
    assert len(inflating_bomb()) > MAX_HEADER_BLOCK
    HOSTILE[hostile](client)
    reader.join(10)
    assert not reader.is_alive(), "the reader is still waiting"
    assert connection.ended.is_set()
    assert accepted == []
