"""Paths inside a directory tree that someone else writes, resolved by the kernel so that nothing leads out.

- Reading a file of a container's root filesystem (a hostile image's): every path resolved as if that
  directory were ``/``: a symlink to ``/etc/shadow`` means the tree's own ``etc/shadow``, ``..`` stops at its
  top (``read_in_root``).
- Directories under a root hulld is told to use (the pod log root): reached without any symlink at all
  (``make_directories_beneath``, ``is_symlink_free_beneath``).

The kernel does the resolution (``openat2`` with ``RESOLVE_IN_ROOT``, Linux 5.6+), so there is no window
between checking a path and opening it, unlike a resolve-then-open done in Python. Only regular files are read
(a device or a FIFO in an image could block hulld or read the host's device), and never more than a bound.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from pathlib import Path

from hulld import errors

SYS_OPENAT2 = 437  # the same number on every architecture Linux has added it to
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


_libc = ctypes.CDLL(None, use_errno=True)


def openat2(directory_fd: int, path: str, flags: int, resolve: int) -> int:
    """The ``openat2`` system call; raises OSError as ``os.open`` does."""
    how = _OpenHow(flags=flags | os.O_CLOEXEC, mode=0, resolve=resolve)
    fd = int(_libc.syscall(SYS_OPENAT2, directory_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def check_supported() -> None:
    """Refuse to run on a kernel without openat2: hulld would have no safe way to read image files."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        os.close(openat2(fd, ".", os.O_PATH, IN_ROOT))
    except OSError as error:
        if error.errno == errno.ENOSYS:
            raise errors.FailedPrecondition("hulld needs Linux 5.6 or newer (the openat2 system call)") from error
        raise
    finally:
        os.close(fd)


def read_in_root(root: Path, path: str, limit: int) -> bytes | None:
    """The content of ``path`` (absolute or relative) inside ``root``; None if there is no such file.

    A path that resolves to something other than a regular file, or to one over ``limit`` bytes, is refused
    with an error naming it: hulld does not guess at image content."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        try:
            found = openat2(root_fd, path.lstrip("/") or ".", os.O_PATH, IN_ROOT)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:  # ELOOP, EXDEV...: the path leads nowhere a file could be read
            raise errors.FailedPrecondition(
                f"/{path.lstrip('/')} in the image cannot be read: {error.strerror}"
            ) from error
        try:
            info = os.fstat(found)
            if not stat.S_ISREG(info.st_mode):
                raise errors.FailedPrecondition(f"/{path.lstrip('/')} in the image is not a regular file")
            if info.st_size > limit:
                raise errors.FailedPrecondition(f"/{path.lstrip('/')} in the image is larger than {limit} bytes")
            # Reopened through the descriptor, not the path: the very file that was checked.
            reading = os.open(f"/proc/self/fd/{found}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
            chunks: list[bytes] = []
            try:
                while sum(map(len, chunks)) <= limit and (chunk := os.read(reading, limit + 1)):
                    chunks.append(chunk)
            finally:
                os.close(reading)
            data = b"".join(chunks)
            if len(data) > limit:  # it grew after the check
                raise errors.FailedPrecondition(f"/{path.lstrip('/')} in the image is larger than {limit} bytes")
            return data
        finally:
            os.close(found)
    finally:
        os.close(root_fd)


class EscapeError(Exception):
    """A path that would lead out of its root, or through a link on the way."""


def make_directories_beneath(root: Path, relative: str) -> None:
    """Make the directories ``relative`` (0755) under ``root``, which must exist, walking one component at a
    time without following any symlink: a symlink or a non-directory on the way raises ``EscapeError``."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in [part for part in relative.split("/") if part not in ("", ".")]:
            if part == "..":
                raise EscapeError(f"{relative!r} has a '..' component")
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = openat2(fd, part, os.O_PATH | os.O_DIRECTORY, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                    raise EscapeError(f"{part!r} in {relative!r} is a symlink or not a directory") from error
                raise
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def is_symlink_free_beneath(root: Path, relative: str) -> bool:
    """Whether ``relative``, if it exists under ``root``, is reached and named without any symlink."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(openat2(fd, relative.strip("/") or ".", os.O_PATH, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS))
    except FileNotFoundError:
        return True
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
            return False
        raise
    finally:
        os.close(fd)
    return True
