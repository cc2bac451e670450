"""The test machine's mounts: what a cluster's kubelet or hulld left under a directory, unmounted."""

from __future__ import annotations

import subprocess
from pathlib import Path


def under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    # mountinfo's fifth field is the mount point (spaces escaped as \040, which kubehull's paths never hold)
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted((p for p in points if p == str(root) or p.startswith(f"{root}/")), key=len, reverse=True)


def unmount_under(root: Path) -> None:
    """Lazily unmount everything at or below ``root`` (a busy mount is detached now, released when unused)."""
    for point in under(root):
        subprocess.run(["umount", "--lazy", point], check=False)
