"""hulld's streaming server: the URL a CRI Exec, Attach or PortForward returns, where the client's connection
is upgraded to SPDY (or to a WebSocket: ``websocket``).

    CRI Exec ──▶ ``prepare`` stores the request under a token ──▶ ``http://127.0.0.1:PORT/exec/TOKEN``
    client ──▶ GET/POST /exec/TOKEN, Upgrade: SPDY/3.1, X-Stream-Protocol-Version: ... ──▶ 101 ──▶ SPDY

A connection is served by a thread of its own. The HTTP request head is parsed by h11; what follows the 101 is
SPDY (``spdy``) carrying the remote-command protocol (``remotecommand``, for /exec and /attach) or the
port-forward protocol (``portforward``, for /portforward). Refusals are plain HTTP, as the
kubelet's own streaming library answers: 404 for an unknown, used or expired token, 400 without the upgrade
headers, 403 when no protocol version is common. The server listens on loopback by default: the kubelet on the
same node is its only client (it proxies kubectl's connection), and the token is the only credential.
"""

from __future__ import annotations

import functools
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import h11

from hulld.metrics import Metrics
from hulld.runtimes.base import PortConnection, StdioSession, TerminalSize
from hulld.streaming import portforward, remotecommand, websocket
from hulld.streaming.portforward import PortForwardRequest
from hulld.streaming.remotecommand import AttachRequest, ExecRequest
from hulld.streaming.spdy import Connection
from hulld.streaming.tokens import TokenCache

logger = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0

T = TypeVar("T", Connection, websocket.WebSocketConnection)
StartExec = Callable[[ExecRequest, TerminalSize | None], StdioSession]
StartAttach = Callable[[AttachRequest, TerminalSize | None], StdioSession]
ConnectPort = Callable[[PortForwardRequest, int], PortConnection]
Prepared = ExecRequest | AttachRequest | PortForwardRequest
ROUTES: dict[str, tuple[type[Prepared], tuple[str, ...]]] = {
    "exec": (ExecRequest, remotecommand.PROTOCOLS),
    "attach": (AttachRequest, remotecommand.PROTOCOLS),
    "portforward": (PortForwardRequest, (portforward.PROTOCOL,)),
}
"""URL path → the prepared request it serves, and the protocol versions spoken there (preferred first)."""


class StreamingServer:
    def __init__(
        self,
        address: str,
        port: int,
        *,
        start_exec: StartExec,
        start_attach: StartAttach,
        connect_port: ConnectPort,
        metrics: Metrics,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._start_exec = start_exec
        self._start_attach = start_attach
        self._connect_port = connect_port
        self.metrics = metrics
        self.tokens: TokenCache[Prepared] = TokenCache()
        self._tls = tls
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = socket.AF_INET6 if ":" in address else socket.AF_INET

        self._server = Server((address, port), Handler)
        host, bound_port = str(self._server.server_address[0]), int(self._server.server_address[1])
        scheme = "https" if tls is not None else "http"
        self.base_url = f"{scheme}://[{host}]:{bound_port}" if ":" in host else f"{scheme}://{host}:{bound_port}"
        threading.Thread(target=self._server.serve_forever, name="streaming server", daemon=True).start()
        logger.info("streaming server on %s", self.base_url)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def prepare(self, request: Prepared) -> str:
        """The URL (absolute: kubelets before 1.37 refuse a relative one) where the client runs the request."""
        route = next(path for path, (kind, _) in ROUTES.items() if isinstance(request, kind))
        return f"{self.base_url}/{route}/{self.tokens.issue(request)}"

    # --- one connection --------------------------------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(HEAD_TIMEOUT)
        if self._tls is not None:
            try:
                client = self._tls.wrap_socket(client, server_side=True)
            except (OSError, ssl.SSLError) as error:
                logger.info("streaming: a TLS handshake failed: %s", error)
                return
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        try:
            request = self._request_head(client, http)
        except (OSError, h11.RemoteProtocolError) as error:
            logger.info("streaming: a bad request: %s", error)
            return
        if request is None:
            return
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        route, _, token = request.target.decode().lstrip("/").partition("/")
        prepared = self.tokens.take(token) if route in ROUTES and request.method in (b"GET", b"POST") else None
        if prepared is None or not isinstance(prepared, ROUTES[route][0]):
            self._refuse(client, http, 404, "unknown, used or expired streaming token")
            return
        over_websocket = "websocket" in headers.get("upgrade", "").lower()
        if "upgrade" not in headers.get("connection", "").lower() or not (
            over_websocket or "spdy/3.1" in headers.get("upgrade", "").lower()
        ):
            self._refuse(client, http, 400, "unable to upgrade: missing upgrade headers in request")
            return
        key = headers.get("sec-websocket-key", "")
        if over_websocket and not key:
            self._refuse(client, http, 400, "unable to upgrade: no Sec-WebSocket-Key")
            return
        offered_in = "sec-websocket-protocol" if over_websocket else "x-stream-protocol-version"
        offered = [
            version.strip()
            for name, value in request.headers
            if name.decode().lower() == offered_in
            for version in value.decode().split(",")
        ]
        protocols = ROUTES[route][1]
        if over_websocket and isinstance(prepared, PortForwardRequest):  # its SPDY is tunnelled
            protocols = tuple(websocket.TUNNEL_PREFIX + name for name in protocols)
        elif over_websocket:  # remote command has WebSocket versions of its own
            protocols = websocket.PROTOCOLS
        protocol = next((version for version in offered if version in protocols), None)
        if protocol is None:
            message = f"unable to upgrade: unable to negotiate protocol: client supports {offered}, server accepts "
            self._refuse(client, http, 403, message + str(list(protocols)))
            return
        answer = (
            websocket.accept_headers(key, protocol)
            if over_websocket
            else [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", protocol)]
        )
        client.sendall(http.send(h11.InformationalResponse(status_code=101, headers=answer)) or b"")
        client.settimeout(None)
        pending = http.trailing_data[0]
        if isinstance(prepared, PortForwardRequest):
            forwarding = portforward.PortForwardSession(prepared, functools.partial(self._connect_port, prepared))
            carrier = websocket.Tunnel(client, pending) if over_websocket else client
            spdy = Connection(carrier, b"" if over_websocket else pending, forwarding.accept)
            self._session("portforward", prepared.handler, spdy, forwarding.run)
            return
        command = remotecommand.RemoteCommandSession(protocol, prepared)
        if isinstance(prepared, ExecRequest):
            kind, start = "exec", functools.partial(self._start_exec, prepared)
        else:
            kind, start = "attach", functools.partial(self._start_attach, prepared)
        if over_websocket:
            channels = websocket.WebSocketConnection(client, pending, protocol, command.expected)
            for channel in channels.channels.values():
                command.accept(channel)
            self._session(kind, prepared.handler, channels, lambda connection: command.run(connection, start))
        else:
            spdy = Connection(client, pending, command.accept)
            self._session(kind, prepared.handler, spdy, lambda connection: command.run(connection, start))

    @staticmethod
    def _request_head(client: socket.socket, http: h11.Connection) -> Any:
        """The request, once h11 has read all of it (these requests have no body) and waits for our answer."""
        request = None
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = client.recv(4096)
                if not data:
                    return None
                http.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif event is h11.PAUSED or (isinstance(event, h11.EndOfMessage) and http.their_state is h11.DONE):
                return request
            elif not isinstance(event, h11.Data | h11.EndOfMessage):
                return None

    @staticmethod
    def _refuse(client: socket.socket, http: h11.Connection, code: int, message: str) -> None:
        body = (message + "\n").encode()
        try:
            client.sendall(
                (http.send(h11.Response(status_code=code, headers=[("Content-Length", str(len(body)))])) or b"")
                + (http.send(h11.Data(data=body)) or b"")
                + (http.send(h11.EndOfMessage()) or b"")
            )
        except (OSError, h11.LocalProtocolError) as error:
            logger.info("streaming: refusing a request (%d %s): %s", code, message, error)

    def _session(self, kind: str, handler: str, connection: T, serve: Callable[[T], str]) -> None:
        """Read the client's frames while ``serve`` runs the session; it says how the session went."""
        reader = threading.Thread(target=connection.run, name=f"{kind} reader", daemon=True)
        reader.start()
        result = "error"
        try:
            result = serve(connection)
        finally:
            connection.close()
            self.metrics.streaming_sessions.labels(kind, handler, result).inc()
            self.metrics.streaming_bytes.labels(kind, handler, "in").inc(connection.bytes_in)
            self.metrics.streaming_bytes.labels(kind, handler, "out").inc(connection.bytes_out)
