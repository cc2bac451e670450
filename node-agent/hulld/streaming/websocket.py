"""The streaming protocols over WebSocket, as crictl and critest speak them with ``--transport websocket`` (the
kubelet speaks SPDY to runtimes): remote command (``v5.channel.k8s.io``, ``v4.channel.k8s.io``) and port-forward,
which is SPDY tunnelled through the WebSocket (``SPDY/3.1+portforward.k8s.io``, ``Tunnel``).

Every message is binary: its first byte names the channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize),
the rest is that channel's data. There is no stream set-up: the channels the request asks for exist from the
start. v5 adds the close signal, ``255 <channel>``: the client's end of that channel (its stdin). The session
ends with the result on the error channel and a normal closure (1000). wsproto does the framing (masking,
fragments, control frames); the handshake's answer is made here, after h11 has read the request.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Iterable

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Message, Ping
from wsproto.utilities import LocalProtocolError, RemoteProtocolError, generate_accept_token

logger = logging.getLogger(__name__)

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
"""The remote-command versions hulld speaks over WebSocket, preferred first (the base64 variants are not offered)."""
TUNNEL_PREFIX = "SPDY/3.1+"
"""Before a SPDY protocol's name, the WebSocket protocol that tunnels it (client-go's port-forward)."""
CHANNELS = ("stdin", "stdout", "stderr", "error", "resize")
CLOSE_SIGNAL = 255
MAX_MESSAGE = 16 * 1024 * 1024
"""A client's message may not be larger (as a SPDY frame may not): the connection is closed with 1009."""
DATA_CHUNK = 32 * 1024


def accept_headers(key: str, protocol: str) -> list[tuple[str, str]]:
    """The 101 answer's headers for a client's ``Sec-WebSocket-Key``, with the protocol chosen."""
    return [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode()),
        ("Sec-WebSocket-Protocol", protocol),
    ]


class Channel:
    """One channel of the session, as a SPDY stream is one: what the client sends on it, and our side."""

    def __init__(self, connection: WebSocketConnection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.headers = {"streamtype": CHANNELS[number]}
        self._incoming: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    @property
    def type(self) -> str:
        return CHANNELS[self.number]

    def read(self) -> bytes:
        """The next data the client sent; b"" once it closed the channel (v5) or the connection ended."""
        data = self._incoming.get()
        if data is None:
            self._incoming.put(None)
            return b""
        return data

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), DATA_CHUNK):
            self.connection.send_message(bytes([self.number]) + data[start : start + DATA_CHUNK])

    def close(self, data: bytes = b"") -> None:
        """Our side ends with ``data``: the connection's closure ends every channel for the client."""
        if data:
            self.write(data)

    def _deliver(self, data: bytes | None) -> None:
        self._incoming.put(data)


class _Endpoint:
    """The server's end of a WebSocket on an upgraded socket: pings answered, text refused, a closure echoed.
    Writes come from any thread."""

    def __init__(self, sock: socket.socket, pending: bytes) -> None:
        self.socket = sock
        self._ws = Connection(ConnectionType.SERVER)
        self._pending = pending
        self._lock = threading.RLock()  # wsproto's state is shared by the reader and every writer
        self.bytes_in = len(pending)
        self.bytes_out = 0

    def _next_messages(self) -> list[BytesMessage] | None:
        """The binary message parts the next read brings (maybe none); None once the session is over."""
        data, self._pending = self._pending, b""
        if not data:
            data = self.socket.recv(65536)
            if not data:
                return None
            self.bytes_in += len(data)
        messages = []
        with self._lock:  # the connection's state changes as the client's frames are read
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, Ping):
                    self._send(event.response())
                elif isinstance(event, CloseConnection):
                    with contextlib.suppress(OSError):  # we closed first: it is their answer
                        self._send(event.response())
                    return None
                elif isinstance(event, BytesMessage):
                    messages.append(event)
                elif isinstance(event, Message):
                    self._close(1003, "the streaming protocols are binary")
                    return None
        return messages

    def _send(self, event: Event) -> None:
        """Frame and send under one lock: wsproto's framing state is not thread-safe, and a message framed by
        one thread must not be sent after another's. Once either side has closed, this fails as a socket would
        (BrokenPipeError): the callers are written against sockets."""
        with self._lock:
            try:
                raw = self._ws.send(event)
            except LocalProtocolError as error:
                raise BrokenPipeError(f"the WebSocket is closed: {error}") from error
            self.socket.sendall(raw)
            self.bytes_out += len(raw)

    def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(OSError):
            self._send(CloseConnection(code=code, reason=reason))


class WebSocketConnection(_Endpoint):
    """A remote-command session carrying the channels ``names``. ``run`` reads until the client goes."""

    def __init__(self, sock: socket.socket, pending: bytes, protocol: str, names: Iterable[str]) -> None:
        super().__init__(sock, pending)
        self.protocol = protocol
        self.channels = {CHANNELS.index(name): Channel(self, CHANNELS.index(name)) for name in names}
        self.ended = threading.Event()

    def run(self) -> None:
        """Read until the client closes, goes, or breaks the protocol; then every channel's reader sees its end."""
        message = bytearray()
        try:
            while (parts := self._next_messages()) is not None:
                for part in parts:
                    message += part.data
                    if len(message) > MAX_MESSAGE:
                        self._close(1009, "message too big")
                        return
                    if part.message_finished:
                        self._route(bytes(message))
                        message.clear()
        except (OSError, RemoteProtocolError, LocalProtocolError) as error:
            logger.info("streaming: the WebSocket connection ended: %s", error)
        finally:
            self.ended.set()
            for channel in self.channels.values():
                channel._deliver(None)

    def _route(self, message: bytes) -> None:
        if not message:
            return
        if message[0] == CLOSE_SIGNAL and self.protocol == PROTOCOLS[0]:
            closed = self.channels.get(message[1]) if len(message) > 1 else None
            if closed is not None:
                closed._deliver(None)
            return
        channel = self.channels.get(message[0])
        if channel is not None and len(message) > 1:
            channel._deliver(message[1:])

    def send_message(self, payload: bytes) -> None:
        self._send(BytesMessage(data=payload))

    def close(self, linger: float = 5.0) -> None:
        """A normal closure, our last frame; then let the client hang up (see spdy.Connection.close)."""
        self._close(1000, "")
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_WR)
        self.ended.wait(linger)
        self.socket.close()


class Tunnel(_Endpoint):
    """A byte stream in binary messages, as client-go tunnels SPDY through a WebSocket for port-forward
    (``SPDY/3.1+portforward.k8s.io``): message boundaries mean nothing, the bytes are SPDY frames. It is what
    ``spdy.Connection`` needs of a socket. Reads are bounded by the socket's: what one ``recv`` brings."""

    def __init__(self, sock: socket.socket, pending: bytes) -> None:
        super().__init__(sock, pending)
        self._received = bytearray()
        self._over = False

    def recv(self, size: int) -> bytes:
        try:
            while not self._received and not self._over:
                parts = self._next_messages()
                if parts is None:
                    self._over = True
                else:
                    for part in parts:
                        self._received += part.data
        except (RemoteProtocolError, LocalProtocolError) as error:
            logger.info("streaming: the WebSocket tunnel ended: %s", error)
            self._over = True
        data = bytes(self._received[:size])
        del self._received[:size]
        return data

    def sendall(self, data: bytes) -> None:
        self._send(BytesMessage(data=data))

    def shutdown(self, how: int) -> None:
        """Our side is done: a normal closure (the client's answer ends ``recv``)."""
        self._close(1000, "")

    def close(self) -> None:
        self.socket.close()
