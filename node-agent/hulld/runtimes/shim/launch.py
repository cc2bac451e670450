"""Starting a containerd shim v2 process, and cleaning up after one that died.

``<shim> -namespace <ns> -address <address> -id <id> start``, run in the first container's bundle, starts the
shim's long-lived process and prints where it listens: a bare ``unix://`` address (containerd 1.x shims) or
bootstrap JSON ``{"version": 2, "address": ..., "protocol": "ttrpc"}`` (2.0-2.2). Shims built on containerd
2.3 or later speak a new bootstrap: ``BootstrapParams`` (protobuf) on stdin, a ``BootstrapResult`` printed;
they refuse a start without the parameters (``NeedsBootstrap``), and older ones read stdin as runtime options
and refuse the parameters, so a handler learns which its shim speaks. The shim derives its socket path from
the address, the namespace and the ID, and publishes its events (exits, OOM kills) to the ttrpc server at
``TTRPC_ADDRESS`` (also in the parameters). ``... delete`` in the same bundle is the shim's own clean-up of a
container whose shim is gone (containerd runs it the same way).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from google.protobuf.message import DecodeError

from hulld import errors
from hulld.runtimes.shim.protocol import task_pb2

NAMESPACE = "hulld"
"""The containerd namespace hulld's shims run in: part of their socket paths and runsc's default root, so they
never meet the shims of a containerd on the same node (which uses k8s.io for Kubernetes pods)."""
START_TIMEOUT = 60.0
DEPRECATED_START = "shim was started through the deprecated API"
"""What a containerd 2.3+ shim says to a start without bootstrap parameters."""


class NeedsBootstrap(errors.FailedPrecondition):
    """The shim speaks containerd 2.3's bootstrap: start it again with ``bootstrap=True``."""


def _argv(binary: Path, address: Path, shim_id: str, command: str) -> list[str]:
    return [str(binary), "-namespace", NAMESPACE, "-address", str(address), "-id", shim_id, command]


def _environment(events: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "TTRPC_ADDRESS": str(events)}


def start(binary: Path, address: Path, events: Path, shim_id: str, bundle: Path, *, bootstrap: bool) -> Path:
    """Start the shim for the pod whose sandbox container is ``shim_id``; returns its socket's path."""
    if not binary.is_file():
        raise errors.FailedPrecondition(f"the shim binary {binary} does not exist")
    parameters = task_pb2.BootstrapParams(
        instance_id=shim_id,
        namespace=NAMESPACE,
        containerd_ttrpc_address=str(events),
        containerd_grpc_address=str(address),
    )
    try:
        result = subprocess.run(
            _argv(binary, address, shim_id, "start"),
            cwd=bundle,
            env=_environment(events),
            input=parameters.SerializeToString() if bootstrap else b"",
            capture_output=True,
            timeout=START_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise errors.DeadlineExceeded(f"{binary.name} start: no answer in {START_TIMEOUT:.0f}s") from None
    if result.returncode != 0:
        message = (result.stderr.decode(errors="replace").strip() or result.stdout.decode(errors="replace")).strip()
        if DEPRECATED_START in message and not bootstrap:
            raise NeedsBootstrap(f"{binary.name} start: {message}")
        raise errors.FailedPrecondition(f"{binary.name} start: {message}")
    return socket_path(binary, result.stdout)


def socket_path(binary: Path, printed: bytes) -> Path:
    """The socket a shim's ``start`` printed (an address, bootstrap JSON, or a BootstrapResult)."""
    output = printed.decode(errors="replace").strip()
    address, protocol = output, "ttrpc"
    if not output.startswith(("unix://", "{")):
        try:
            bootstrap = task_pb2.BootstrapResult.FromString(printed)
        except DecodeError as error:
            raise errors.FailedPrecondition(f"{binary.name} start printed {output!r}: {error}") from None
        address, protocol = bootstrap.address, bootstrap.protocol or "ttrpc"
    elif output.startswith("{"):
        try:
            bootstrap = json.loads(output)
            address, protocol = str(bootstrap["address"]), str(bootstrap.get("protocol", "ttrpc"))
        except (ValueError, KeyError, TypeError) as error:
            raise errors.FailedPrecondition(f"{binary.name} start printed unreadable bootstrap JSON: {error}") from None
    if protocol != "ttrpc":
        raise errors.FailedPrecondition(f"{binary.name} speaks {protocol}; hulld speaks ttrpc to shims")
    if not address.startswith("unix://"):
        raise errors.FailedPrecondition(f"{binary.name} start printed {output!r}, not a unix:// address")
    return Path(address.removeprefix("unix://"))


def clean_up(binary: Path, address: Path, events: Path, container_id: str, bundle: Path) -> str:
    """The shim's own clean-up of a container its dead shim left (the runtime's state, mounts); its output."""
    try:
        result = subprocess.run(
            [*_argv(binary, address, container_id, "delete")[:-1], "-bundle", str(bundle), "delete"],
            cwd=bundle if bundle.is_dir() else "/",
            env=_environment(events),
            capture_output=True,
            timeout=START_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    return result.stderr.decode(errors="replace").strip()


def version(binary: Path) -> str:
    """``<shim> -v`` says its name and version over several lines: "containerd-shim-runc-v2 1.6.20"."""
    try:
        result = subprocess.run([str(binary), "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    words = result.stdout.split()
    name = words[0].rstrip(":") if words else binary.name
    number = words[words.index("Version:") + 1] if "Version:" in words[:-1] else ""
    return f"{name} {number}".strip()
