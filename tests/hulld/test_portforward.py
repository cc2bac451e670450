"""Port-forward through hulld's streaming server, driven by crictl (SPDY, as the kubelet speaks it, and SPDY
tunnelled through a WebSocket): several connections at once on one session, bytes checked both ways, half-close;
what is refused, and how."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from kubehull_harness.pytest_plugin import OCIRegistry
from kubehull_harness.waiting import wait_until
from tests.hulld.conftest import Hulld
from tests.hulld.test_lifecycle import container_config, pod_config

pytestmark = [pytest.mark.registry, pytest.mark.root, pytest.mark.slow]


@dataclasses.dataclass(frozen=True)
class Forwarding:
    half_close: bool
    """Whether the client's half-close reaches the pod (gVisor's port-forward cannot half-close: the pod sees the
    end of input only when the client closes completely)."""
    payload: int
    """Bytes per connection, echoed while they are sent."""


HANDLERS = {
    "runc": Forwarding(half_close=True, payload=4 * 1024 * 1024),
    # gVisor's own port-forward proxy stalls when megabytes flow both ways at once (runsc port-forward alone
    # does too): echoes stay small here, and the e2e test downloads 5 MiB from a gVisor pod (docs/hulld.md).
    "runsc": Forwarding(half_close=False, payload=64 * 1024),
    "shim-runc": Forwarding(half_close=True, payload=4 * 1024 * 1024),
}
"""In the pod's network namespace (runc, runc's shim) and inside gVisor's own network stack (runsc)."""
ECHO_PORT = 7000


def echo_pod(hulld: Hulld, oci_registry: OCIRegistry, tmp_path: Path, handler: str) -> str:
    """A pod whose container echoes what each connection to port 7000 sends, until that connection's FIN."""
    image = oci_registry.images["busybox"].reference
    hulld.crictl("pull", image)
    pod_file = pod_config(tmp_path, f"pf-{handler}")
    pod = hulld.crictl("runp", "--runtime", handler, pod_file).stdout.strip()
    config = container_config(tmp_path, "echo", image, ["nc", "-ll", "-p", str(ECHO_PORT), "-e", "cat"])
    container = hulld.crictl("create", pod, config, pod_file).stdout.strip()
    hulld.crictl("start", container)
    return pod


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_forward(hulld: Hulld, pod: str, *mappings: str, transport: str = "spdy") -> subprocess.Popen[str]:
    forwarder = subprocess.Popen(
        [*hulld.crictl_argv(), "port-forward", "--transport", transport, pod, *mappings],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    local = int(mappings[0].split(":")[0])
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", local), timeout=1).close()
            return forwarder
        except OSError:
            assert forwarder.poll() is None, forwarder.communicate()[0]
            assert time.monotonic() < deadline, "crictl port-forward did not listen"
            time.sleep(0.1)


def echoed(port: int, payload: bytes, *, half_close: bool) -> bytes:
    """Send ``payload`` and read the echo: with ``half_close``, end our side and read until the pod's ends too;
    without, read as many bytes as were sent and close."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=60) as connection,
        concurrent.futures.ThreadPoolExecutor(1) as sender,
    ):

        def send() -> None:
            connection.sendall(payload)
            if half_close:
                connection.shutdown(socket.SHUT_WR)

        sent = sender.submit(send)
        received = bytearray()
        while half_close or len(received) < len(payload):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
        sent.result()
    return bytes(received)


def stop(forwarder: subprocess.Popen[str]) -> str:
    forwarder.send_signal(signal.SIGINT)
    output, _ = forwarder.communicate(timeout=20)
    return output


@pytest.mark.parametrize(
    ("handler", "transport"), [*((handler, "spdy") for handler in HANDLERS), ("runc", "websocket")]
)
def test_port_forward_carries_concurrent_connections_both_ways(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, handler: str, transport: str
) -> None:
    forwarding = HANDLERS[handler]
    half_close = forwarding.half_close
    hulld = hulld_with_network
    pod = echo_pod(hulld, oci_registry, tmp_path, handler)
    local = free_port()
    forwarder = port_forward(hulld, pod, f"{local}:{ECHO_PORT}", transport=transport)
    try:
        payloads = [os.urandom(forwarding.payload) for _ in range(3)]
        with concurrent.futures.ThreadPoolExecutor(len(payloads)) as pool:
            results = list(pool.map(lambda payload: echoed(local, payload, half_close=half_close), payloads))
        for payload, result in zip(payloads, results, strict=True):
            assert len(result) == len(payload)
            assert hashlib.sha256(result).digest() == hashlib.sha256(payload).digest()
        assert echoed(local, b"", half_close=half_close) == b""  # a connection the client ends at once
        assert echoed(local, b"again\n", half_close=half_close) == b"again\n"  # the session goes on
    finally:
        output = stop(forwarder)
    assert "error" not in output.lower(), output
    ended = f'hulld_streaming_sessions_total{{handler="{handler}",kind="portforward",result="ok"}} 1.0'
    wait_until(lambda: ended in hulld.metrics(), 10, "the session to be counted")  # it ends after the client


def test_port_forward_refusals_name_their_reason(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path
) -> None:
    hulld = hulld_with_network
    pod = echo_pod(hulld, oci_registry, tmp_path, "runc")
    runtime = hulld.runtime()
    with pytest.raises(grpc.RpcError) as refused:
        runtime.PortForward(cri.PortForwardRequest(pod_sandbox_id=pod, port=[70000]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "port 70000" in str(refused.value.details())
    with pytest.raises(grpc.RpcError) as refused:
        runtime.PortForward(cri.PortForwardRequest(pod_sandbox_id="0" * 64))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND

    # Nothing listens on 7001 in the pod: the client is told why, and gives up the session (as kubectl does).
    local = free_port()
    forwarder = port_forward(hulld, pod, f"{local}:7001")
    with socket.create_connection(("127.0.0.1", local), timeout=10) as connection:
        connection.settimeout(20)
        assert connection.recv(100) == b""
    output, _ = forwarder.communicate(timeout=20)
    assert f"error forwarding port 7001 to pod {pod}" in output
    assert "connection refused" in output.lower()
    ended = 'hulld_streaming_sessions_total{handler="runc",kind="portforward",result="error"} 1.0'
    wait_until(lambda: ended in hulld.metrics(), 10, "the session to end")

    hulld.crictl("stopp", pod)
    with pytest.raises(grpc.RpcError) as refused:
        runtime.PortForward(cri.PortForwardRequest(pod_sandbox_id=pod))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not ready" in str(refused.value.details())
