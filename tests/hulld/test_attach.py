"""Attach to a running container's own stdio — through conmon's attach socket (OCI handlers), through the
shim's stdio FIFOs (shim v2 handlers) — driven by crictl (SPDY, as the kubelet speaks it): stdin with
stdinOnce, a container started under a terminal and resized, detaching, and what is refused."""

from __future__ import annotations

import fcntl
import json
import os
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from kubehull_harness.pytest_plugin import OCIRegistry
from kubehull_harness.waiting import wait_until
from tests.hulld.conftest import Hulld
from tests.hulld.test_lifecycle import pod_config, write

pytestmark = [pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

HANDLERS = ["runc", "runsc", "shim-runc", "shim-runsc"]


def interactive_container(
    hulld: Hulld,
    oci_registry: OCIRegistry,
    tmp_path: Path,
    handler: str,
    name: str,
    command: tuple[str, ...] = ("sh",),
    **stdio: bool,
) -> str:
    """A running container (by default ``sh``) created with the CRI's ``stdin``, ``stdin_once`` and ``tty`` as
    given."""
    image = oci_registry.images["busybox"].reference
    hulld.crictl("pull", image)
    pod_file = pod_config(tmp_path, f"{name}-{handler}")
    pod = hulld.crictl("runp", "--runtime", handler, pod_file).stdout.strip()
    config = write(
        tmp_path / f"{name}-ctr.json",
        {
            "metadata": {"name": name},
            "image": {"image": image},
            "command": list(command),
            "log_path": f"{name}.log",
            "linux": {},
            **stdio,
        },
    )
    container = hulld.crictl("create", pod, config, pod_file).stdout.strip()
    hulld.crictl("start", container)
    return container


def status(hulld: Hulld, container: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(hulld.crictl("inspect", container).stdout)["status"]
    return answer


@pytest.mark.parametrize("handler", HANDLERS)
def test_attach_feeds_stdin_once_and_the_container_ends(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, handler: str
) -> None:
    """What critest's attach spec does, and more: both output streams, the end of input ends the container
    (stdinOnce), crictl returns 0, and the output is in the container's log as well."""
    hulld = hulld_with_network
    container = interactive_container(hulld, oci_registry, tmp_path, handler, "once", stdin=True, stdin_once=True)
    attached = subprocess.run(
        [*hulld.crictl_argv(), "attach", "-i", container],
        input=b"echo to-stdout; echo to-stderr >&2; exit 5\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert attached.returncode == 0, attached.stderr
    assert attached.stdout == b"to-stdout\n"
    assert b"to-stderr\n" in attached.stderr
    wait_until(lambda: status(hulld, container)["state"] == "CONTAINER_EXITED", 30, "the container to exit")
    assert status(hulld, container)["exitCode"] == 5
    log = hulld.crictl("logs", container)
    assert "to-stdout" in log.stdout
    assert "to-stderr" in log.stderr
    counted = f'hulld_streaming_sessions_total{{handler="{handler}",kind="attach",result="ok"}} 1.0'
    wait_until(lambda: counted in hulld.metrics(), 10, "the session counted")


@pytest.mark.parametrize("handler", HANDLERS)
def test_attach_to_a_terminal_container_resizes_it_and_detaches(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, handler: str
) -> None:
    """A ``tty: true`` container runs under a terminal of its own: attached from a 33x101 terminal, it sees that
    size. A client that goes away leaves it running (stdin stays open without stdinOnce); the next one finds
    the same shell."""
    hulld = hulld_with_network
    container = interactive_container(hulld, oci_registry, tmp_path, handler, "tty", stdin=True, tty=True)
    first = attach_terminal(hulld, container, b"[ -t 0 ] && echo on a terminal; stty size; export MARK=kept\n")
    assert "on a terminal" in first
    assert "33 101" in first
    assert status(hulld, container)["state"] == "CONTAINER_RUNNING"  # the client left; the shell did not
    second = attach_terminal(hulld, container, b"echo mark=$MARK; exit 7\n")
    assert "mark=kept" in second
    wait_until(lambda: status(hulld, container)["state"] == "CONTAINER_EXITED", 30, "the container to exit")
    assert status(hulld, container)["exitCode"] == 7


def attach_terminal(hulld: Hulld, container: str, typed: bytes) -> str:
    """``crictl attach -it`` from a 33x101 terminal: type, collect the output for a few seconds (or until the
    container ends), then close the client."""
    main, other = os.openpty()
    fcntl.ioctl(other, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    client = subprocess.Popen([*hulld.crictl_argv(), "attach", "-it", container], stdin=other, stdout=other)
    output = b""
    try:
        time.sleep(1)  # attached: what is typed before would go to a shell that nobody reads
        os.write(main, typed)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and client.poll() is None:
            if select.select([main], [], [], 0.2)[0]:
                output += os.read(main, 4096)
    finally:
        client.kill()
        client.wait()
        os.close(main)
        os.close(other)
    return output.decode(errors="replace")


def test_attach_refusals_name_their_reason(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path
) -> None:
    hulld = hulld_with_network
    runtime = hulld.runtime()
    plain = interactive_container(hulld, oci_registry, tmp_path, "runc", "plain", ("sleep", "3600"))
    for request, code, message in (
        (cri.AttachRequest(container_id=plain, stdout=True, tty=True), "INVALID_ARGUMENT", "tty"),
        (cri.AttachRequest(container_id=plain, stdin=True, stdout=True), "INVALID_ARGUMENT", "stdin"),
        (cri.AttachRequest(container_id=plain), "INVALID_ARGUMENT", "one of stdin, stdout and stderr"),
        (cri.AttachRequest(container_id="0" * 64, stdout=True), "NOT_FOUND", ""),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            runtime.Attach(request)
        assert refused.value.code().name == code, refused.value.details()
        assert message in str(refused.value.details())
    hulld.crictl("stop", plain)
    with pytest.raises(grpc.RpcError) as refused:
        runtime.Attach(cri.AttachRequest(container_id=plain, stdout=True))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
