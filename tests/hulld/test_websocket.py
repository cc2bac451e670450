"""hulld's WebSocket channels (remote command over WebSocket) over a socket pair, the client's frames made by
wsproto's client side: routing by channel, v5's close signal, pings; and hostile input — a text message, a
message past the size bound, frames that break the protocol — each ends that connection only; and SPDY
tunnelled through a WebSocket (port-forward's transport)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from hulld.streaming import spdy
from hulld.streaming.websocket import MAX_MESSAGE, Tunnel, WebSocketConnection
from tests.hulld.test_spdy import serve_in_thread


class Client:
    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.ws = Connection(ConnectionType.CLIENT)

    def send(self, event: BytesMessage | TextMessage | Ping | CloseConnection) -> None:
        self.socket.sendall(self.ws.send(event))

    def next_event(self) -> object:
        while True:
            for event in self.ws.events():
                return event
            data = self.socket.recv(65536)
            self.ws.receive_data(data or None)


@pytest.fixture
def session() -> Iterator[tuple[Client, WebSocketConnection, threading.Thread]]:
    ours, theirs = socket.socketpair()
    connection = WebSocketConnection(ours, b"", "v5.channel.k8s.io", ["stdin", "stdout", "stderr", "error"])
    for reader in serve_in_thread(connection.run, ours, theirs):
        yield Client(theirs), connection, reader


def test_channels_close_signal_and_pings(
    session: tuple[Client, WebSocketConnection, threading.Thread],
) -> None:
    client, connection, _ = session
    stdin = connection.channels[0]
    client.send(BytesMessage(data=b"\x00hello"))
    assert stdin.read() == b"hello"
    client.send(BytesMessage(data=b"\x07ignored"))  # no such channel: dropped
    client.send(Ping(payload=b"beat"))
    assert client.next_event() == Pong(payload=b"beat")
    connection.channels[1].write(b"out")
    assert client.next_event() == BytesMessage(data=b"\x01out", frame_finished=True, message_finished=True)
    client.send(BytesMessage(data=b"\xff\x00"))  # v5: the client's stdin ends
    assert stdin.read() == b""
    assert not connection.ended.is_set()


@pytest.mark.parametrize("hostile", ["a text message", "a message past the bound", "an unmasked frame"])
def test_hostile_input_ends_the_connection(
    session: tuple[Client, WebSocketConnection, threading.Thread], hostile: str
) -> None:
    client, connection, reader = session
    if hostile == "a text message":
        client.send(TextMessage(data="AGhlbGxv"))  # a base64 protocol's frame, not offered
    elif hostile == "a message past the bound":
        client.send(BytesMessage(data=b"\x00" + b"x" * MAX_MESSAGE))
    else:
        client.socket.sendall(b"\x82\x05\x00hello")  # a client frame must be masked
    reader.join(10)
    assert not reader.is_alive()
    assert connection.ended.is_set()
    assert connection.channels[0].read() == b""  # the reader sees the end
    if hostile != "an unmasked frame":
        closed = client.next_event()
        assert isinstance(closed, CloseConnection)
        assert closed.code == (1003 if hostile == "a text message" else 1009)


def test_spdy_tunnelled_through_websocket() -> None:
    """Port-forward's SPDY in binary messages whose boundaries mean nothing: a frame split across two messages
    arrives whole, the answer comes back in a binary message, and the client's closure ends the session."""
    ours, theirs = socket.socketpair()
    connection = spdy.Connection(Tunnel(ours, b""), b"", lambda stream: True)
    for reader in serve_in_thread(connection.run, ours, theirs):
        client = Client(theirs)
        ping = struct.pack(">HHII", 0x8003, spdy.PING, 4, 7)
        client.send(BytesMessage(data=ping[:5]))
        client.send(Ping(payload=b"beat"))  # the WebSocket's own pings are answered meanwhile
        assert client.next_event() == Pong(payload=b"beat")
        client.send(BytesMessage(data=ping[5:]))
        answer = client.next_event()
        assert isinstance(answer, BytesMessage)
        assert answer.data == ping
        client.send(CloseConnection(code=1000))
        reader.join(10)
        assert connection.ended.is_set()
        assert client.next_event() == CloseConnection(code=1000, reason="")  # the closure is answered
        with pytest.raises(BrokenPipeError):  # a forwarded connection's last bytes, after the client left
            connection.send_data(1, b"late", fin=True)
        connection.close(linger=0)  # its GOAWAY has nowhere to go: the session still ends cleanly


def test_concurrent_writers_send_whole_messages(
    session: tuple[Client, WebSocketConnection, threading.Thread],
) -> None:
    """stdout and stderr are written by threads of their own: each message arrives whole, in its own order."""
    client, connection, _ = session
    count = 300

    def write(channel: int) -> None:
        for number in range(count):
            connection.channels[channel].write(b"%d" % number)

    writers = [threading.Thread(target=write, args=(channel,)) for channel in (1, 2)]
    for writer in writers:
        writer.start()
    received: dict[int, list[bytes]] = {1: [], 2: []}
    for _ in range(2 * count):
        message = client.next_event()
        assert isinstance(message, BytesMessage)
        assert message.message_finished
        received[message.data[0]].append(bytes(message.data[1:]))
    for writer in writers:
        writer.join()
    assert received == {channel: [b"%d" % number for number in range(count)] for channel in (1, 2)}
