"""Pod namespaces pinned without a process (the approach of CRI-O's pinns).

``unshare --net=FILE --ipc=FILE --uts=FILE hostname NAME`` creates the namespaces, sets the pod's hostname in
the new UTS namespace, and bind-mounts each namespace onto its file, so it outlives the short-lived process.
Containers then join them by path. The files live in a directory that is a private bind mount of itself, as
such bind mounts require; ``remove`` unmounts and deletes them and is idempotent. ``connect_loopback`` opens a
TCP connection inside a pod's network namespace (port-forward); ``interface_counters`` reads its interfaces'
counters (CRI metrics).
"""

from __future__ import annotations

import ctypes
import dataclasses
import ipaddress
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from hulld import errors

logger = logging.getLogger(__name__)
KINDS = ("net", "ipc", "uts")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)  # setns: os.setns arrives with Python 3.12
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Pinned:
    net: Path | None
    ipc: Path | None
    uts: Path | None

    def paths(self) -> list[Path]:
        return [path for path in (self.net, self.ipc, self.uts) if path is not None]


def _is_mountpoint(path: Path) -> bool:
    return any(line.split()[4] == str(path) for line in Path("/proc/self/mountinfo").read_text().splitlines())


def prepare(directory: Path) -> None:
    """Make ``directory`` a private mount, where namespace bind mounts may live."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not _is_mountpoint(directory):
        subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True, capture_output=True)
    subprocess.run(["mount", "--make-private", str(directory)], check=True, capture_output=True)


def pin(directory: Path, sandbox_id: str, hostname: str, *, net: bool, ipc: bool, uts: bool) -> Pinned:
    """New namespaces of the kinds asked for (False: the pod uses the host's)."""
    wanted = {"net": net, "ipc": ipc, "uts": uts}
    paths = {kind: directory / f"{sandbox_id}-{kind}" if on else None for kind, on in wanted.items()}
    argv = ["unshare"]
    for kind, path in paths.items():
        if path is not None:
            path.touch()
            argv.append(f"--{kind}={path}")
    if len(argv) == 1:
        return Pinned(net=None, ipc=None, uts=None)
    # The command runs inside the new namespaces: in a new UTS namespace it names the pod.
    argv += ["hostname", hostname] if uts else ["true"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    pinned = Pinned(**paths)
    if result.returncode != 0:
        remove(pinned)
        raise errors.FailedPrecondition(f"creating the pod's namespaces failed: {result.stderr.strip()}")
    return pinned


def remove(pinned: Pinned) -> None:
    for path in pinned.paths():
        if _is_mountpoint(path):
            subprocess.run(["umount", str(path)], check=False, capture_output=True)
        path.unlink(missing_ok=True)


def restore_addresses(
    net: Path, interface: str, addresses: Sequence[ipaddress.IPv4Interface | ipaddress.IPv6Interface]
) -> None:
    """Put each of ``addresses`` on ``interface`` in the network namespace ``net`` if it is not there
    (``ip address replace`` leaves one that is). A failure is logged: the caller goes on with the teardown."""
    for address in addresses:
        argv = ["nsenter", f"--net={net}", "ip", "address", "replace", str(address), "dev", interface]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            logger.warning("restoring %s on %s in %s: %s", address, interface, net, error)
            return
        if result.returncode != 0:
            logger.info("restoring %s on %s in %s: %s", address, interface, net, result.stderr.strip())


def connect_loopback(net: Path | None, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to ``port`` on the loopback of the network namespace ``net`` (None: the host's), to
    127.0.0.1 and else ::1, as containerd's port-forward does. The socket keeps the namespace it was made in."""
    if net is None:
        return _dial_loopback(port, timeout)
    return _in_network_namespace(net, lambda: _dial_loopback(port, timeout))


@dataclasses.dataclass(frozen=True)
class InterfaceCounters:
    """One interface's counters in /proc/net/dev."""

    receive_bytes: int
    receive_packets: int
    receive_errors: int
    receive_dropped: int
    transmit_bytes: int
    transmit_packets: int
    transmit_errors: int
    transmit_dropped: int


def interface_counters(net: Path) -> dict[str, InterfaceCounters]:
    """The counters of every interface of the network namespace ``net`` but its loopback (as cAdvisor)."""
    text = _in_network_namespace(net, lambda: Path("/proc/thread-self/net/dev").read_text())
    counters = {}
    for line in text.splitlines()[2:]:  # two header lines
        name, _, numbers = line.partition(":")
        fields = [int(field) for field in numbers.split() if field.isdigit()]
        if name.strip() != "lo" and len(fields) >= 16:
            # receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets errs drop
            counters[name.strip()] = InterfaceCounters(*fields[0:4], *fields[8:12])
    return counters


def _in_network_namespace(net: Path, task: Callable[[], T]) -> T:
    """``task``'s result, run in a thread that entered ``net``. setns moves only the calling thread; this one
    ends right after, so nothing else ever runs in the pod's namespace."""
    outcome: list[T | Exception] = []

    def in_namespace() -> None:
        try:
            descriptor = os.open(net, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(descriptor, CLONE_NEWNET) != 0:
                    number = ctypes.get_errno()
                    raise OSError(number, f"entering the pod's network namespace: {os.strerror(number)}")
            finally:
                os.close(descriptor)
            outcome.append(task())
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=in_namespace, name=f"in network namespace {net.name}", daemon=True)
    thread.start()
    thread.join()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def _dial_loopback(port: int, timeout: float) -> socket.socket:
    try:
        connection = socket.create_connection(("127.0.0.1", port), timeout)
    except OSError as ipv4_error:
        try:
            connection = socket.create_connection(("::1", port), timeout)
        except OSError:
            raise ipv4_error from None
    connection.settimeout(None)
    return connection
