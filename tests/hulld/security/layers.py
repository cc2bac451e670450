"""Hand-made image layers for the security tests: tar entries as plain data, written as a PAX tar.

Python's tarfile writes names, link targets and modes exactly as given (``..``, leading ``/``, setuid bits on
a hard link), which is what a hostile image holds and what an ordinary image builder would never produce.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]

TAR_TYPES: dict[Kind, bytes] = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tar entry (a dataclass rather than a TarInfo, so that a failing example reads well)."""

    kind: Kind
    name: str
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    content: bytes = b""
    """A regular file's bytes."""
    linkname: str = ""
    """A symlink's target, or the earlier entry a hard link names."""
    device: tuple[int, int] = (0, 0)
    """A device's major and minor numbers."""
    xattrs: tuple[tuple[str, bytes], ...] = ()
    """Extended attributes, written as PAX ``SCHILY.xattr.<name>`` records."""

    def tarinfo(self) -> tarfile.TarInfo:
        info = tarfile.TarInfo(self.name)
        info.type = TAR_TYPES[self.kind]
        info.mode = self.mode
        info.uid, info.gid = self.uid, self.gid
        info.mtime = self.mtime
        info.size = len(self.content) if self.kind == "file" else 0
        info.linkname = self.linkname
        info.devmajor, info.devminor = self.device
        # A value that is not UTF-8 goes through tarfile as surrogates and is written back as its own bytes.
        info.pax_headers = {
            f"SCHILY.xattr.{name}": value.decode("utf-8", "surrogateescape") for name, value in self.xattrs
        }
        return info


def write_layer(path: Path, entries: Iterable[Entry]) -> str:
    """Write ``entries`` in order as an uncompressed tar at ``path``; returns its diff_id."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            archive.addfile(entry.tarinfo(), io.BytesIO(entry.content) if entry.kind == "file" else None)
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
