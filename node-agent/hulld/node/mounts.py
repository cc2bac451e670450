"""Container root filesystems: an overlayfs of the image's layers with a private upper directory."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from hulld import errors


def is_mounted(path: Path) -> bool:
    target = str(path)
    return any(line.split()[4] == target for line in Path("/proc/self/mountinfo").read_text().splitlines())


def mount_overlay(layers: Sequence[Path], upper: Path, work: Path, target: Path) -> None:
    """``layers`` bottom first, as in the image."""
    for directory in (upper, work, target):
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    lower = ":".join(str(layer) for layer in reversed(layers))
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(target)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise errors.FailedPrecondition(f"mounting the container's root filesystem: {result.stderr.strip()}")


def unmount(target: Path) -> None:
    if is_mounted(target):
        subprocess.run(["umount", str(target)], capture_output=True, check=False)
        if is_mounted(target):  # still busy: detach it lazily rather than leak it
            subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)
