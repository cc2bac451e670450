"""Unpack one image layer (a tar, plain, gzip or zstd) into its own directory, ready as an overlayfs lower.

The tar is hostile until proven otherwise, so nothing here resolves a path the usual way. Every entry is
made relative to a descriptor of its parent directory, reached from the layer's top one component at a time
with ``O_NOFOLLOW``: a parent that is a symlink (or anything but a real directory of this layer) fails the
layer, and the entry itself is created, replaced, chowned, chmodded and timed as itself, never through a link.
Hard links may only point at regular files already in this layer. Extended attributes come only from the
``user.`` namespace and ``security.capability`` (an image must never set ``trusted.overlay.*`` and steer
overlayfs); ``trusted.overlay.opaque`` is set by hulld alone, for an opaque whiteout.

Whiteouts become what overlayfs understands: ``.wh.NAME`` a 0/0 character device ``NAME``, ``.wh..wh..opq``
the ``trusted.overlay.opaque`` xattr on its directory. The uncompressed stream is hashed on the way through
and must match the image config's diff_id. ``Limits`` bound what one layer may cost: its uncompressed bytes,
its entry count, and the size of any one tar header.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Self

import zstandard

from hulld import errors

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XATTR_PREFIX = "SCHILY.xattr."
ALLOWED_XATTRS = ("user.", "security.capability")
EXTENDED_HEADERS = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
MAX_EXTENDED_HEADER = 1 << 20
"""tarfile reads a PAX or GNU long-name header whole into memory: one of gigabytes would exhaust hulld."""
COPY_CHUNK = 1 << 20
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclasses.dataclass(frozen=True)
class Limits:
    max_bytes: int = 16 << 30
    """Uncompressed bytes of the layer's tar stream."""
    max_entries: int = 1_000_000


class HashingReader(io.RawIOBase):
    """Reads through to ``source``, hashes what passes, and refuses to pass more than ``limit`` bytes."""

    def __init__(self, source: IO[bytes], limit: int) -> None:
        self.source = source
        self.limit = limit
        self.count = 0
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read(len(buffer))
        self.count += len(data)
        if self.count > self.limit:
            raise errors.FailedPrecondition(
                f"the layer unpacks to more than {self.limit} bytes (images.max_layer_bytes)"
            )
        buffer[: len(data)] = data
        self.hasher.update(data)
        return len(data)

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses an extended header too large to read into memory, before tarfile reads it."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors_: str) -> Self:
        info = super().frombuf(buf, encoding, errors_)
        if info.type in EXTENDED_HEADERS and info.size > MAX_EXTENDED_HEADER:
            raise errors.FailedPrecondition(f"the layer has a tar header of {info.size} bytes")
        return info


def _decompressed(blob: IO[bytes]) -> IO[bytes]:
    magic = blob.read(4)
    blob.seek(0)
    if magic.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=blob)  # type: ignore[return-value]
    if magic == ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(blob)
    return blob


def _clean(name: str) -> str:
    """``./etc/passwd`` and ``/etc/passwd`` are ``etc/passwd``; ``.`` and ``./`` are the layer root ("")."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise errors.FailedPrecondition(f"layer entry {name!r} points outside the layer")
    return "/".join(parts)


class _Layer:
    """The layer's directory, with descriptors of the directories reached in it so far (tar streams come
    grouped by directory, so most entries reuse their parent's)."""

    def __init__(self, target: Path) -> None:
        self.top = os.open(target, DIRECTORY_FLAGS)
        self._directories: dict[str, int] = {"": self.top}
        self._deferred_times: dict[str, tuple[int, int]] = {}

    def close(self) -> None:
        for fd in self._directories.values():
            os.close(fd)
        self._directories = {}

    def _forget(self, removed: str) -> None:
        """After ``removed`` is deleted, its (and its children's) cached descriptors and deferred times are for
        entries that no longer exist."""

        def under(name: str) -> bool:
            return name == removed or name.startswith(f"{removed}/")

        for name in [name for name in self._directories if under(name)]:
            os.close(self._directories.pop(name))
        for name in [name for name in self._deferred_times if under(name)]:
            del self._deferred_times[name]

    def directory(self, relative: str, *, entry: str) -> int:
        """A descriptor of the directory ``relative``, made (0755, like tar) where missing; never a link."""
        if relative in self._directories:
            return self._directories[relative]
        parent, _, name = relative.rpartition("/")
        parent_fd = self.directory(parent, entry=entry)
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        try:
            fd = os.open(name, DIRECTORY_FLAGS, dir_fd=parent_fd)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise errors.FailedPrecondition(
                    f"layer entry {entry!r} goes through {relative!r}, which is not a directory of the layer"
                ) from error
            raise
        self._directories[relative] = fd
        return fd

    def split(self, name: str) -> tuple[int, str]:
        """(descriptor of the parent directory, the last component) of the entry ``name``."""
        parent, _, base = name.rpartition("/")
        return self.directory(parent, entry=name), base

    def clear(self, name: str, *, keep_directory: bool) -> tuple[int, str]:
        """Make room for the entry ``name``: remove what is there (a directory only unless the new entry is
        one). Returns (descriptor of its parent directory, its last component)."""
        parent_fd, base = self.split(name)
        try:
            existing = os.stat(base, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return parent_fd, base
        if not stat.S_ISDIR(existing.st_mode):
            os.unlink(base, dir_fd=parent_fd)
        elif not keep_directory:
            shutil.rmtree(base, dir_fd=parent_fd)
            self._forget(name)
        return parent_fd, base

    def defer_times(self, name: str, times: tuple[int, int]) -> None:
        self._deferred_times[name] = times

    def apply_deferred_times(self) -> None:
        """Directory times last, as tar does: entries made inside a directory change its mtime."""
        for name, times in self._deferred_times.items():
            try:
                parent_fd, base = self.split(name) if name else (self.top, ".")
                os.utime(base, ns=times, dir_fd=parent_fd, follow_symlinks=False)
            except (FileNotFoundError, errors.FailedPrecondition):
                continue  # its parent was replaced later in the layer by something else


@contextlib.contextmanager
def _opened(parent_fd: int, base: str, flags: int) -> Iterator[int]:
    fd = os.open(base, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    wanted = {}
    for key, value in member.pax_headers.items():
        if key.startswith(XATTR_PREFIX):
            name = key[len(XATTR_PREFIX) :]
            if name.startswith(ALLOWED_XATTRS):
                wanted[name] = value.encode("utf-8", "surrogateescape")
    return wanted


def _whiteout(layer: _Layer, name: str) -> bool:
    """Turn a whiteout entry into its overlayfs form; False if ``name`` is an ordinary entry."""
    directory, _, base = name.rpartition("/")
    if base == OPAQUE:
        os.setxattr(layer.directory(directory, entry=name), "trusted.overlay.opaque", b"y")
        return True
    if base.startswith(WHITEOUT) and len(base) > len(WHITEOUT):
        parent_fd, hidden = layer.clear(f"{directory}/{base[len(WHITEOUT) :]}".lstrip("/"), keep_directory=False)
        os.mknod(hidden, 0o600 | stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent_fd)
        return True
    return False


def _extract(layer: _Layer, archive: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> None:
    parent_fd, base = layer.clear(name, keep_directory=member.isdir())
    times = (int(member.mtime * 1e9),) * 2
    if member.isdir():
        with contextlib.suppress(FileExistsError):
            os.mkdir(base, 0o700, dir_fd=parent_fd)
        with _opened(parent_fd, base, os.O_RDONLY | os.O_DIRECTORY) as fd:
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, stat.S_IMODE(member.mode))
            for key, value in _xattrs(member).items():
                os.setxattr(fd, key, value)
        layer.defer_times(name, times)
        return
    if member.isreg():
        source = archive.extractfile(member)
        if source is None:  # tarfile gives every regular file a reader; this keeps the types honest
            raise errors.FailedPrecondition(f"layer entry {name!r} has no data")
        with _opened(parent_fd, base, os.O_WRONLY | os.O_CREAT | os.O_EXCL) as fd:
            with open(fd, "wb", closefd=False) as out:
                shutil.copyfileobj(source, out, COPY_CHUNK)
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, stat.S_IMODE(member.mode))
            for key, value in _xattrs(member).items():
                os.setxattr(fd, key, value)
            os.utime(fd, ns=times)
        return
    if member.issym():
        os.symlink(member.linkname, base, dir_fd=parent_fd)
        os.chown(base, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        os.utime(base, ns=times, dir_fd=parent_fd, follow_symlinks=False)
        return
    if member.islnk():
        _hard_link(layer, member, name, parent_fd, base)
        return
    if member.ischr() or member.isblk() or member.isfifo():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
        os.mknod(base, 0o600 | kind, os.makedev(member.devmajor, member.devminor), dir_fd=parent_fd)
        with _opened(parent_fd, base, os.O_PATH) as fd:  # never opened for real: that could act on a device
            os.chown(f"/proc/self/fd/{fd}", member.uid, member.gid)
            os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(member.mode))
            os.utime(f"/proc/self/fd/{fd}", ns=times)
        return
    raise errors.FailedPrecondition(f"layer entry {name!r} has an unsupported tar type {member.type!r}")


def _hard_link(layer: _Layer, member: tarfile.TarInfo, name: str, parent_fd: int, base: str) -> None:
    """A second name for a regular file already in this layer; its attributes are the file's, untouched."""
    target = _clean(member.linkname)
    if not target:
        raise errors.FailedPrecondition(f"layer entry {name!r} is a hard link to the layer's top")
    target_parent, target_base = layer.split(target)
    try:
        existing = os.stat(target_base, dir_fd=target_parent, follow_symlinks=False)
    except FileNotFoundError as error:
        raise errors.FailedPrecondition(f"layer entry {name!r} links to {target!r}, not in the layer") from error
    if not stat.S_ISREG(existing.st_mode):
        raise errors.FailedPrecondition(f"layer entry {name!r} links to {target!r}, which is not a regular file")
    os.link(target_base, base, src_dir_fd=target_parent, dst_dir_fd=parent_fd, follow_symlinks=False)


def unpack(blob_path: Path, target: Path, diff_id: str, limits: Limits = Limits()) -> int:
    """Extract the layer at ``blob_path`` into the new directory ``target``; returns its unpacked size.

    Whatever the layer holds, the answer is its size or ``FailedPrecondition`` naming what is wrong: a
    hostile tar (a bad device number, an owner out of range, corrupt compression) is the image's fault."""
    target.mkdir(mode=0o755)
    with blob_path.open("rb") as blob, _decompressed(blob) as stream:
        reader = HashingReader(stream, limits.max_bytes)
        layer = _Layer(target)
        try:
            size = _unpack_stream(reader, layer, limits)
            while reader.read(COPY_CHUNK):  # tar padding after the last entry still counts for the digest
                pass
            layer.apply_deferred_times()
        except tarfile.TarError as error:
            raise errors.FailedPrecondition(f"the layer is not a valid tar: {error}") from error
        except (OSError, EOFError, zstandard.ZstdError) as error:
            raise errors.FailedPrecondition(f"the layer cannot be read: {error}") from error
        finally:
            layer.close()
    if reader.digest() != diff_id:
        raise errors.FailedPrecondition(f"layer content {reader.digest()} does not match its diff_id {diff_id}")
    return size


def _unpack_stream(reader: HashingReader, layer: _Layer, limits: Limits) -> int:
    size = entries = 0
    with tarfile.open(fileobj=io.BufferedReader(reader, COPY_CHUNK), mode="r|", tarinfo=_BoundedTarInfo) as archive:
        for member in archive:
            entries += 1
            if entries > limits.max_entries:
                raise errors.FailedPrecondition(
                    f"the layer has more than {limits.max_entries} entries (images.max_layer_entries)"
                )
            name = _clean(member.name)
            try:
                if not name:
                    _set_root_attributes(layer, member)
                elif not _whiteout(layer, name):
                    _extract(layer, archive, member, name)
                    size += member.size
            except (OSError, ValueError, OverflowError) as error:
                raise errors.FailedPrecondition(f"layer entry {name!r} cannot be unpacked: {error}") from error
    return size


def _set_root_attributes(layer: _Layer, member: tarfile.TarInfo) -> None:
    if member.isdir():
        os.fchown(layer.top, member.uid, member.gid)
        os.fchmod(layer.top, stat.S_IMODE(member.mode))
        layer.defer_times("", (int(member.mtime * 1e9),) * 2)
