"""Canaries: host files and directories that an attack would touch, and a check that it did not.

A canary is snapshotted (mode, owner, content, xattrs, link count, and a directory's entries) before the
attack and compared after it, whether the attacked request failed or succeeded.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

CONTENT = b"canary: this host file must never change\n"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    mode: int
    uid: int
    gid: int
    nlink: int
    content: bytes | None
    """A file's bytes; None for a directory."""
    entries: tuple[str, ...]
    """A directory's entry names; empty for a file."""
    xattrs: tuple[tuple[str, bytes], ...]


def snapshot(path: Path) -> Snapshot:
    info = os.lstat(path)
    is_dir = path.is_dir() and not path.is_symlink()
    names = sorted(os.listxattr(path, follow_symlinks=False))
    return Snapshot(
        mode=info.st_mode,
        uid=info.st_uid,
        gid=info.st_gid,
        nlink=info.st_nlink,
        content=None if is_dir else path.read_bytes(),
        entries=tuple(sorted(os.listdir(path))) if is_dir else (),
        xattrs=tuple((name, os.getxattr(path, name, follow_symlinks=False)) for name in names),
    )


@dataclasses.dataclass(frozen=True)
class Canaries:
    """A root-owned 0600 file and a root-owned 0700 directory holding one file, outside anything hulld owns."""

    file: Path
    directory: Path

    @classmethod
    def plant(cls, parent: Path) -> Canaries:
        parent.mkdir(parents=True, exist_ok=True)
        file = parent / "canary-file"
        file.write_bytes(CONTENT)
        os.chmod(file, 0o600)
        directory = parent / "canary-dir"
        directory.mkdir(mode=0o700)
        (directory / "inside").write_bytes(CONTENT)
        return cls(file=file, directory=directory)

    def snapshots(self) -> dict[Path, Snapshot]:
        return {path: snapshot(path) for path in (self.file, self.directory, self.directory / "inside")}

    def assert_unchanged(self, before: dict[Path, Snapshot]) -> None:
        after = self.snapshots()
        for path, old in before.items():
            assert after[path] == old, f"{path} changed: {old} -> {after[path]}"
