"""Device nodes of the host, as OCI ``linux.devices`` entries: one named in a request, or all of them for a
privileged container (as containerd's ``WithHostDevices``)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from hulld import errors

OWN_NODES = frozenset({"/dev/console", "/dev/ptmx"})
"""The container has its own: a console (if it has a terminal) and the ptmx of its devpts instance."""
SKIPPED = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})
"""Directories of /dev that hold no device of the host's own (or that the container gets anyway)."""


def _entry(path: str, info: os.stat_result, container_path: str) -> dict[str, Any]:
    kind = "c" if stat.S_ISCHR(info.st_mode) else "b"
    return {
        "path": container_path,
        "type": kind,
        "major": os.major(info.st_rdev),
        "minor": os.minor(info.st_rdev),
        "fileMode": stat.S_IMODE(info.st_mode),
        "uid": info.st_uid,
        "gid": info.st_gid,
    }


def device(host_path: str, container_path: str) -> dict[str, Any]:
    """The device at ``host_path`` (symlinks followed, as the kubelet names /dev/disk/by-id links)."""
    try:
        info = os.stat(host_path)
    except FileNotFoundError as error:
        raise errors.NotFound(f"device {host_path} does not exist") from error
    if not (stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)):
        raise errors.InvalidArgument(f"{host_path} is not a device")
    return _entry(host_path, info, container_path or host_path)


def host_devices(root: Path = Path("/dev")) -> list[dict[str, Any]]:
    """Every character and block device under /dev, skipping symlinks and the container's own nodes."""
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [name for name in subdirectories if name not in SKIPPED]
        for name in files:
            path = os.path.join(directory, name)
            if path in OWN_NODES:
                continue
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                found.append(_entry(path, info, path))
    return sorted(found, key=lambda entry: str(entry["path"]))


def block_device_name(major: int, minor: int) -> str:
    """The host's name for a block device (``/dev/sda``), as cAdvisor labels I/O; ``MAJOR:MINOR`` if unknown."""
    try:
        uevent = Path(f"/sys/dev/block/{major}:{minor}/uevent").read_text()
    except OSError:
        return f"{major}:{minor}"
    names = [line.partition("=")[2] for line in uevent.splitlines() if line.startswith("DEVNAME=")]
    return f"/dev/{names[0]}" if names else f"{major}:{minor}"
