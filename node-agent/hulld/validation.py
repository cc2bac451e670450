"""Every field of a pod or container request that reaches a command, a file path or the OCI runtime, checked
before anything is made. A refusal is ``InvalidArgument`` whose message starts with the CRI field's path
(``linux.sysctls[kernel.panic]: ...``), so the kubelet's event names what to fix.

Requests arrive as protobuf's JSON mapping (camelCase keys; an unknown enum number stays a number).
docs/security.md lists each check and why.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path, PurePosixPath
from typing import Any

from hulld import errors
from hulld.node import confined
from hulld.node.cgroups.layout import SLICE_NAME, Driver

HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$")
"""At most 64 characters (the kernel's HOST_NAME_MAX); never starting with '-' (it goes into a command)."""
SYSCTL_NAME = re.compile(r"^[a-z0-9_]+([./][A-Za-z0-9_-]+)+$")
CGROUP_COMPONENT = re.compile(r"^[A-Za-z0-9_.:@=+-]+$")
SEARCH_DOMAIN = re.compile(r"^[A-Za-z0-9_.-]{1,253}$")
RESOLVER_OPTION = re.compile(r"^[A-Za-z0-9_.:+-]{1,64}$")
PROPAGATIONS = ("PROPAGATION_PRIVATE", "PROPAGATION_HOST_TO_CONTAINER", "PROPAGATION_BIDIRECTIONAL")
IPC_SYSCTLS = ("kernel.shm", "kernel.msg", "fs.mqueue.")
"""Sysctls of the IPC namespace (prefixes), as the kubelet's namespaced list; kernel.sem is one more."""


def _refuse(field: str, problem: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"{field}: {problem}")


def absolute_path(value: str, field: str) -> str:
    """An absolute, clean path: no '..', no NUL."""
    if not value.startswith("/") or "\x00" in value or ".." in PurePosixPath(value).parts:
        raise _refuse(field, f"{value!r} must be an absolute path without '..'")
    return value


def _sysctl_namespace(name: str) -> str | None:
    """ "net" or "ipc" for a namespaced sysctl; None for one that would change the whole node."""
    if name.startswith("net."):
        return "net"
    if name == "kernel.sem" or name.startswith(IPC_SYSCTLS):
        return "ipc"
    return None


def pod(config: dict[str, Any], *, pod_log_root: Path, cgroup_driver: Driver) -> None:
    """A PodSandboxConfig (RunPodSandbox)."""
    linux = config.get("linux") or {}
    options = (linux.get("securityContext") or {}).get("namespaceOptions") or {}
    hostname = config.get("hostname", "")
    if hostname and not HOSTNAME.match(hostname):
        raise _refuse("hostname", f"{hostname!r} is not a host name (letters, digits, '.', '-'; at most 64)")
    for name, value in (linux.get("sysctls") or {}).items():
        field = f"linux.sysctls[{name}]"
        normalized = name.replace("/", ".")
        namespace = _sysctl_namespace(normalized) if SYSCTL_NAME.match(name) else None
        if namespace is None:
            raise _refuse(field, "only namespaced sysctls (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)")
        if namespace == "net" and options.get("network") == "NODE":
            raise _refuse(field, "a pod on the host's network may not set net.* sysctls: they would change the node")
        if namespace == "ipc" and options.get("ipc") == "NODE":
            raise _refuse(field, "a pod in the host's IPC namespace may not set IPC sysctls")
        if any(character in str(value) for character in "\x00\n\r"):
            raise _refuse(field, "the value has a line break or NUL")
    parent = linux.get("cgroupParent", "")
    if parent and "/" in parent:
        parts = parent.strip("/").split("/")
        if not parent.startswith("/") or not all(
            CGROUP_COMPONENT.match(part) and part not in (".", "..") for part in parts
        ):
            raise _refuse("linux.cgroup_parent", f"{parent!r} is not an absolute cgroup path of plain names")
    if parent and cgroup_driver == "systemd":
        name = parent.rpartition("/")[2]
        if len(name) > 255 or not SLICE_NAME.match(name):
            raise _refuse(
                "linux.cgroup_parent",
                f"{parent!r} does not end in a systemd slice (the systemd cgroup driver is in use)",
            )
    elif parent and "/" not in parent:
        raise _refuse("linux.cgroup_parent", f"{parent!r} is not an absolute cgroup path of plain names")
    dns = config.get("dnsConfig") or {}
    for index, server in enumerate(dns.get("servers") or []):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise _refuse(f"dns_config.servers[{index}]", f"{server!r} is not an IP address") from None
    for index, domain in enumerate(dns.get("searches") or []):
        if not SEARCH_DOMAIN.match(domain):
            raise _refuse(f"dns_config.searches[{index}]", f"{domain!r} is not a domain name")
    for index, option in enumerate(dns.get("options") or []):
        if not RESOLVER_OPTION.match(option):
            raise _refuse(f"dns_config.options[{index}]", f"{option!r} is not a resolver option")
    log_directory = config.get("logDirectory", "")
    if log_directory:
        _pod_log_directory(log_directory, pod_log_root)


def _pod_log_directory(value: str, root: Path) -> None:
    absolute_path(value, "log_directory")
    path = Path(value)
    if path == root or not path.is_relative_to(root):
        raise _refuse("log_directory", f"{value!r} must be inside the pod log root {root}")
    root.mkdir(parents=True, exist_ok=True, mode=0o755)
    if not confined.is_symlink_free_beneath(root, str(path.relative_to(root))):
        raise _refuse("log_directory", f"{value!r} goes through a symlink or a file under {root}")


def log_file(log_directory: str, log_path: str) -> Path | None:
    """The container's log file (CreateContainer's log_path in the pod's log directory), its directories made
    without following a symlink; None when the container has no log."""
    if not log_directory or not log_path:
        return None
    parts = PurePosixPath(log_path).parts
    if log_path.startswith("/") or "\x00" in log_path or ".." in parts or not parts:
        raise _refuse("log_path", f"{log_path!r} must be a relative path inside the pod's log directory")
    directory = Path(log_directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        confined.make_directories_beneath(directory, str(PurePosixPath(log_path).parent))
    except confined.EscapeError as error:
        raise _refuse("log_path", f"{log_path!r}: {error}") from error
    if not confined.is_symlink_free_beneath(directory, log_path):
        raise _refuse("log_path", f"{log_path!r} is a symlink")
    return directory / log_path


def container(config: dict[str, Any]) -> None:
    """A ContainerConfig (CreateContainer); the log path is checked by ``log_file``."""
    working_dir = config.get("workingDir", "")
    if working_dir:
        absolute_path(working_dir, "working_dir")
    for index, mount in enumerate(config.get("mounts") or []):
        absolute_path(mount.get("containerPath", ""), f"mounts[{index}].container_path")
        absolute_path(mount.get("hostPath", ""), f"mounts[{index}].host_path")
        propagation = mount.get("propagation", "PROPAGATION_PRIVATE")
        if propagation not in PROPAGATIONS:
            raise _refuse(f"mounts[{index}].propagation", f"{propagation!r} is not a mount propagation")
    for index, device in enumerate(config.get("devices") or []):
        absolute_path(device.get("hostPath", ""), f"devices[{index}].host_path")
        if device.get("containerPath"):
            absolute_path(device["containerPath"], f"devices[{index}].container_path")
        permissions = device.get("permissions", "")
        if not set(permissions) <= set("rwm"):
            raise _refuse(f"devices[{index}].permissions", f"{permissions!r} is not made of r, w and m")
