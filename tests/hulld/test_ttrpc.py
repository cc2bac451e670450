"""hulld's ttrpc client under concurrent callers: what it puts on the wire.

The peer is a minimal ttrpc server of the test's own that records each request's stream ID and answers it: the
fault, two callers' requests reaching the shim out of stream-ID order, depends on thread timing that a real shim
shows only rarely (a CI run failed with the shim's "StreamID cannot be re-used and must increment"), so the
test records the order itself and makes threads switch as often as Python allows.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hulld.runtimes.shim import ttrpc
from hulld.runtimes.shim.framing import RESPONSE, frame, read_frame
from hulld.runtimes.shim.protocol import ttrpc_pb2

CALLS = 2000


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def recording_server(path: Path, streams: list[int]) -> None:
    """Accept one connection; answer every request with an empty OK response, recording its stream ID."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()

    def serve() -> None:
        connection, _ = listener.accept()
        listener.close()
        with connection:
            while True:
                try:
                    stream, _, _ = read_frame(connection)
                except (OSError, ConnectionError):
                    return
                streams.append(stream)
                connection.sendall(frame(stream, RESPONSE, ttrpc_pb2.Response().SerializeToString()))

    threading.Thread(target=serve, daemon=True).start()


def test_concurrent_calls_reach_the_server_in_stream_id_order(tmp_path: Path, frequent_thread_switches: None) -> None:
    streams: list[int] = []
    recording_server(tmp_path / "shim.sock", streams)
    client = ttrpc.Client(tmp_path / "shim.sock")
    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda _: client.call("svc", "Call", ttrpc_pb2.Request(), ttrpc_pb2.Response, 30), range(CALLS)
                )
            )
    finally:
        client.close()
    assert len(answers) == CALLS
    assert streams == list(range(1, 2 * CALLS, 2))  # every call, odd IDs, each one higher than the last
