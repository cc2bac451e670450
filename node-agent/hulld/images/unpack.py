"""Unpack one image layer (a tar, plain, gzip or zstd) into its own directory, ready as an overlayfs lower.

Whiteouts become what overlayfs understands: ``.wh.NAME`` a 0/0 character device ``NAME``, ``.wh..wh..opq``
the ``trusted.overlay.opaque`` xattr on its directory. The uncompressed stream is hashed on the way through
and must match the image config's diff_id. Entries that would land outside the directory (absolute names,
``..``, paths through a symlink, hard links pointing out) fail the whole layer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import IO, Any

import zstandard

from hulld import errors

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class HashingReader(io.RawIOBase):
    """Reads through to ``source`` and hashes what passes."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        buffer[: len(data)] = data
        self.hasher.update(data)
        return len(data)

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


def _decompressed(blob: IO[bytes]) -> IO[bytes]:
    magic = blob.read(4)
    blob.seek(0)
    if magic.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=blob)  # type: ignore[return-value]
    if magic == ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(blob)
    return blob


def _inside(root: Path, name: str) -> Path:
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        raise errors.FailedPrecondition(f"layer entry {name!r} points outside the layer")
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise errors.FailedPrecondition(f"layer entry {name!r} goes through a symlink")
    return root / Path(*parts)


def _clean(name: str) -> str:
    """``./etc/passwd`` and ``/etc/passwd`` are ``etc/passwd``; ``.`` and ``./`` are the layer root ("")."""
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    return "" if name in (".", "") else name.rstrip("/")


def _whiteout(root: Path, member: tarfile.TarInfo) -> bool:
    """Turn a whiteout entry into its overlayfs form; False if ``member`` is an ordinary entry."""
    directory, base = os.path.split(member.name)
    if base == OPAQUE:
        target = _inside(root, directory or ".")
        target.mkdir(parents=True, exist_ok=True)
        os.setxattr(target, "trusted.overlay.opaque", b"y")
        return True
    if base.startswith(WHITEOUT):
        target = _inside(root, os.path.join(directory, base[len(WHITEOUT) :]))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(target, 0o600 | 0o020000, os.makedev(0, 0))  # S_IFCHR 0/0
        return True
    return False


def unpack(blob_path: Path, target: Path, diff_id: str) -> int:
    """Extract the layer at ``blob_path`` into the new directory ``target``; returns its unpacked size."""
    target.mkdir(parents=True)
    size = 0
    with blob_path.open("rb") as blob, _decompressed(blob) as stream:
        reader = HashingReader(stream)
        with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 20), mode="r|") as archive:
            for member in archive:
                member.name = _clean(member.name)
                if not member.name:
                    continue
                if _whiteout(target, member):
                    continue
                destination = _inside(target, member.name)
                if member.islnk():
                    member.linkname = _clean(member.linkname)
                    _inside(target, member.linkname)
                if destination.is_symlink() or (destination.exists() and not destination.is_dir()):
                    destination.unlink()
                # Trusted here: every name was checked above, and ownership, modes and devices are the image's.
                archive.extract(member, target, set_attrs=True, numeric_owner=True, filter="fully_trusted")
                size += member.size
        while reader.read(1 << 20):  # tar padding after the last entry still counts for the digest
            pass
    if reader.digest() != diff_id:
        raise errors.FailedPrecondition(f"layer content {reader.digest()} does not match its diff_id {diff_id}")
    return size
