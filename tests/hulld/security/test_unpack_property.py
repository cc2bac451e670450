"""Property tests of layer unpacking (``hulld.images.unpack.unpack``) on generated tar layers.

Hostile layers (symlinks and hard links out to host canaries, ``..`` and absolute names, whiteouts and opaque
markers through symlinked parents, devices, duplicate names, forged overlayfs xattrs): whether unpack succeeds
or refuses the layer with FailedPrecondition, nothing outside its target directory changes, and the target
holds no hard link to anything outside it and no trusted.* xattr but the opaque markers' own.

Legitimate layers (well-formed trees of directories, files, symlinks, hard links, fifos and devices with
arbitrary owners, modes, times and user xattrs): unpack's tree is the one GNU tar extracts, attribute for
attribute.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import stat
import struct
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hulld import errors
from hulld.images import unpack
from tests.hulld.security.canary import Canaries
from tests.hulld.security.layers import OPAQUE, WHITEOUT, Entry, Kind, write_layer

pytestmark = [pytest.mark.root]

# Each example runs in its own scratch directory under tmp_path (hypothesis runs many examples per fixture).
PROPERTY_SETTINGS = settings(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

HOST = "/@host@"
"""Stands for the host directory holding the canaries; each example puts its real absolute path there."""

TARGET = Path("sub/dir/target")
"""Where a layer is unpacked, below the scratch directory: ``../../../host`` from it is the canaries."""

CAPABILITY = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)
"""A valid security.capability value (VFS_CAP_REVISION_2, effective, CAP_NET_BIND_SERVICE permitted)."""


# --- hostile layers -------------------------------------------------------------------------------------------

PATH_COMPONENTS = ("a", "b", "l", "..", ".", "inside", "canary-file", f"{WHITEOUT}a", f"{WHITEOUT}inside", OPAQUE)
HOST_PATHS = tuple(
    f"{HOST}/{path}"
    for path in (
        "canary-file",
        "canary-dir",
        "canary-dir/inside",
        "canary-dir/new",
        f"canary-dir/{WHITEOUT}inside",
        f"canary-dir/{OPAQUE}",
    )
)
SYMLINK_TARGETS = (
    f"{HOST}/canary-file",
    f"{HOST}/canary-dir",
    f"{HOST}/canary-dir/inside",
    ".",
    "..",
    "../..",
    "a",
    "l",
    "a/b",
    "l/inside",
    "inside",
    *(f"{'../' * ups}host/{name}" for ups in range(1, 6) for name in ("canary-file", "canary-dir")),
)
HOSTILE_XATTRS = (
    ("user.x", b"v"),
    ("trusted.overlay.redirect", b"/canary-dir"),
    ("trusted.overlay.opaque", b"y"),
    ("trusted.overlay.origin", b"\x00\xfb"),
    ("security.capability", CAPABILITY),
    ("security.capability", b"\x00not a capability"),
    ("security.selinux", b"system_u:object_r:etc_t:s0"),
)
HOSTILE_DEVICES = ((0, 0), (1, 3), (1, 5), (240, 7))
"""0/0 (a whiteout's form), /dev/null, /dev/zero, and an unassigned number (nothing to open if misused)."""

relative_paths = st.lists(st.sampled_from(PATH_COMPONENTS), min_size=1, max_size=4).map("/".join)
hostile_names = st.one_of(
    relative_paths,
    relative_paths.map(lambda path: f"./{path}"),
    relative_paths.map(lambda path: f"{path}/"),
    st.sampled_from(HOST_PATHS),
)
hostile_modes = st.sampled_from([0o644, 0o755, 0o4777, 0o7777, 0o000])
hostile_ids = st.sampled_from([0, 4321])
hostile_xattrs = st.lists(st.sampled_from(HOSTILE_XATTRS), max_size=3, unique_by=lambda pair: pair[0]).map(tuple)
hostile_entries = st.one_of(
    st.builds(
        Entry,
        kind=st.just("file"),
        name=hostile_names,
        mode=hostile_modes,
        uid=hostile_ids,
        gid=hostile_ids,
        content=st.binary(max_size=64),
        xattrs=hostile_xattrs,
    ),
    st.builds(
        Entry, kind=st.just("dir"), name=hostile_names, mode=hostile_modes, uid=hostile_ids, xattrs=hostile_xattrs
    ),
    st.builds(Entry, kind=st.just("symlink"), name=hostile_names, linkname=st.sampled_from(SYMLINK_TARGETS)),
    st.builds(
        Entry,
        kind=st.just("hardlink"),
        name=hostile_names,
        linkname=st.one_of(hostile_names, st.sampled_from(SYMLINK_TARGETS)),
        mode=hostile_modes,
        uid=hostile_ids,
    ),
    st.builds(
        Entry,
        kind=st.sampled_from(["char", "block", "fifo"]),
        name=hostile_names,
        mode=hostile_modes,
        device=st.sampled_from(HOSTILE_DEVICES),
    ),
)


def placed(entry: Entry, host: Path) -> Entry:
    """``entry`` with the HOST placeholder in its name and link target replaced by the canaries' directory."""
    return dataclasses.replace(
        entry, name=entry.name.replace(HOST, str(host)), linkname=entry.linkname.replace(HOST, str(host))
    )


def opaque_directories(entries: list[Entry]) -> set[str]:
    """The directories (relative to the layer root, "." the root) that the layer's opaque markers name."""
    marked: set[str] = set()
    for entry in entries:
        parts = [part for part in entry.name.split("/") if part not in ("", ".")]  # as tar readers take a name
        if parts and parts[-1] == OPAQUE:
            marked.add("/".join(parts[:-1]) or ".")
    return marked


@dataclasses.dataclass(frozen=True)
class Observed:
    """What an attack could change about a path, as seen through lstat (never through a link)."""

    mode: int
    uid: int
    gid: int
    xattrs: tuple[tuple[str, bytes], ...]
    nlink: int | None
    """None for a directory (creating the target changes its parents' link counts)."""
    mtime_ns: int | None
    """None for a directory (creating the target changes its parent's)."""
    content: bytes | None
    symlink_target: str | None
    device: int | None


def observe(path: Path) -> Observed:
    info = os.lstat(path)
    is_dir = stat.S_ISDIR(info.st_mode)
    return Observed(
        mode=info.st_mode,
        uid=info.st_uid,
        gid=info.st_gid,
        xattrs=xattrs(path),
        nlink=None if is_dir else info.st_nlink,
        mtime_ns=None if is_dir else info.st_mtime_ns,
        content=path.read_bytes() if stat.S_ISREG(info.st_mode) else None,
        symlink_target=os.readlink(path) if stat.S_ISLNK(info.st_mode) else None,
        device=info.st_rdev if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else None,
    )


def xattrs(path: Path) -> tuple[tuple[str, bytes], ...]:
    names = sorted(os.listxattr(path, follow_symlinks=False))
    return tuple((name, os.getxattr(path, name, follow_symlinks=False)) for name in names)


def walk(root: Path, skip: Path | None = None) -> list[Path]:
    """Every path below ``root`` (not following symlinks), leaving out ``skip`` and what is below it."""
    found: list[Path] = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [name for name in subdirectories if Path(directory, name) != skip]
        found += [Path(directory, name) for name in (*subdirectories, *files)]
    return found


def outside_target(scratch: Path, target: Path) -> dict[Path, Observed]:
    return {path: observe(path) for path in [scratch, *walk(scratch, skip=target)]}


def assert_target_is_self_contained(target: Path, canaries: Canaries, opaque_dirs: set[str] | None) -> None:
    """No hard link to anything outside ``target``, no trusted.* xattr but the opaque markers' own
    (``opaque_dirs``: the directories the layer marked opaque; None when the layer was refused half-way)."""
    canary_paths = (canaries.file, canaries.directory, canaries.directory / "inside")
    canary_inodes = {(info.st_dev, info.st_ino) for info in map(os.lstat, canary_paths)}
    paths_of_inode: defaultdict[tuple[int, int], list[Path]] = defaultdict(list)
    for path in [target, *walk(target)]:
        info = os.lstat(path)
        assert (info.st_dev, info.st_ino) not in canary_inodes, f"{path} is a hard link to a host canary"
        if not stat.S_ISDIR(info.st_mode):
            paths_of_inode[(info.st_dev, info.st_ino)].append(path)
        trusted = [name for name, _ in xattrs(path) if name.startswith("trusted.")]
        assert set(trusted) <= {"trusted.overlay.opaque"}, f"{path} has forged overlayfs xattrs {trusted}"
        if trusted and opaque_dirs is not None:
            relative = str(path.relative_to(target)) if path != target else "."
            assert relative in opaque_dirs, f"{path} is opaque without an opaque marker in the layer"
    for paths in paths_of_inode.values():
        assert os.lstat(paths[0]).st_nlink == len(paths), f"{paths} are hard links to a file outside the layer"


@settings(PROPERTY_SETTINGS, max_examples=400)
@given(layer=st.lists(hostile_entries, min_size=1, max_size=12))
# The reported attack: a hard link to a symlink to a host file, its attributes applied through the link.
@example(
    layer=[
        Entry("symlink", "evil", linkname=f"{HOST}/canary-file"),
        Entry("hardlink", "x", linkname="evil", mode=0o4777, uid=4321, gid=4321),
    ]
)
@example(
    layer=[
        Entry("symlink", "d", linkname=f"{HOST}/canary-dir"),
        Entry("file", f"d/{OPAQUE}"),
        Entry("file", f"d/{WHITEOUT}inside"),
    ]
)
@example(layer=[Entry("symlink", "d", linkname="../../../host/canary-dir"), Entry("file", "d/new", content=b"x")])
@example(layer=[Entry("hardlink", "x", linkname=f"{HOST}/canary-file", mode=0o4777, uid=4321)])
@example(layer=[Entry("hardlink", "x", linkname="../../../host/canary-file", mode=0o4777, uid=4321)])
@example(layer=[Entry("symlink", "l", linkname=".."), Entry("symlink", "l/l", linkname=".."), Entry("file", "l/l/x")])
@example(
    layer=[
        Entry("file", "a"),
        Entry("dir", "a"),
        Entry("symlink", "a", linkname=f"{HOST}/canary-dir"),
        Entry("file", "a/inside", mode=0o4777),
    ]
)
# A directory replaced by a symlink out, below the top, then written through.
@example(
    layer=[
        Entry("dir", "a"),
        Entry("dir", "a/b"),
        Entry("symlink", "a/b", linkname=f"{HOST}/canary-dir"),
        Entry("file", "a/b/inside", mode=0o4777),
    ]
)
@example(layer=[Entry("dir", "..", mode=0o777, uid=4321), Entry("file", "../canary", content=b"x")])
@example(layer=[Entry("file", "f", xattrs=(("trusted.overlay.redirect", b"/x"), ("trusted.overlay.opaque", b"y")))])
def test_no_layer_changes_anything_outside_its_directory(tmp_path: Path, layer: list[Entry]) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch_name:
        scratch = Path(scratch_name)
        canaries = Canaries.plant(scratch / "host")
        target = scratch / TARGET
        target.parent.mkdir(parents=True)
        entries = [placed(entry, canaries.file.parent) for entry in layer]
        blob = scratch / "layer.tar"
        diff_id = write_layer(blob, entries)
        canaries_before = canaries.snapshots()
        before = outside_target(scratch, target)
        try:
            unpack.unpack(blob, target, diff_id)
            opaque_dirs: set[str] | None = opaque_directories(entries)
        except errors.FailedPrecondition:
            opaque_dirs = None
        canaries.assert_unchanged(canaries_before)
        assert outside_target(scratch, target) == before
        if target.exists():
            assert_target_is_self_contained(target, canaries, opaque_dirs)


# --- legitimate layers ----------------------------------------------------------------------------------------

LEGITIMATE_KINDS: tuple[Kind, ...] = ("dir", "file", "symlink", "hardlink", "fifo", "char")
name_components = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=16).filter(
    lambda name: name not in (".", "..") and not name.startswith(WHITEOUT)
)
modes = st.one_of(st.sampled_from([0o644, 0o755, 0o700, 0o4755, 0o2755, 0o1777, 0o000]), st.integers(0, 0o7777))
owner_ids = st.one_of(st.sampled_from([0, 1000, 65534]), st.integers(0, 1 << 24))
mtimes = st.integers(0, 1 << 32)
user_xattr_names = st.text("abcxyz._", min_size=1, max_size=8).map(lambda name: f"user.{name}")
user_xattrs = st.lists(
    st.tuples(user_xattr_names, st.binary(min_size=1, max_size=32)),
    max_size=3,
    unique_by=lambda pair: pair[0],
).map(tuple)
capabilities = st.tuples(st.integers(0, (1 << 32) - 1), st.integers(0, 0x1FF)).map(
    lambda bits: (("security.capability", struct.pack("<5I", 0x02000001, bits[0], 0, bits[1], 0)),)
)


@st.composite
def legitimate_layers(draw: st.DrawFn) -> list[Entry]:
    """A well-formed tree: each entry's parent is an earlier directory entry, names are unique, hard links
    name earlier regular files and carry their attributes (as tar writers do)."""
    directories = [""]
    setgid_directories: set[str] = set()
    regular_files: list[Entry] = []
    taken: set[str] = set()
    entries: list[Entry] = []
    for _ in range(draw(st.integers(1, 24))):
        parent = draw(st.sampled_from(directories))
        name = posixpath.join(parent, draw(name_components))
        if name in taken:
            continue
        taken.add(name)
        kind = draw(st.sampled_from(LEGITIMATE_KINDS))
        if kind == "hardlink" and regular_files:
            linked = draw(st.sampled_from(regular_files))
            entries.append(
                Entry(
                    "hardlink",
                    name,
                    mode=linked.mode,
                    uid=linked.uid,
                    gid=linked.gid,
                    mtime=linked.mtime,
                    linkname=linked.name,
                )
            )
            continue
        entry = Entry(kind, name, mode=draw(modes), uid=draw(owner_ids), gid=draw(owner_ids), mtime=draw(mtimes))
        if kind == "dir":
            # GNU tar keeps the setgid bit a directory inherits from its parent whatever its header says, where
            # hulld (as containerd) applies the header's mode: only trees on which the two agree are compared.
            mode = entry.mode | (stat.S_ISGID if parent in setgid_directories else 0)
            entry = dataclasses.replace(entry, mode=mode, xattrs=draw(user_xattrs))
            directories.append(name)
            if mode & stat.S_ISGID:
                setgid_directories.add(name)
        elif kind in ("file", "hardlink"):  # a hard link with no regular file before it: a file instead
            content = draw(st.binary(max_size=3000))
            capability = draw(st.one_of(st.just(()), capabilities))
            entry = dataclasses.replace(entry, kind="file", content=content, xattrs=draw(user_xattrs) + capability)
            regular_files.append(entry)
        elif kind == "symlink":
            target = draw(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=150))
            entry = dataclasses.replace(entry, linkname=target)
        elif kind == "char":
            entry = dataclasses.replace(entry, device=(draw(st.integers(0, 255)), draw(st.integers(0, 255))))
        entries.append(entry)
    return entries


@dataclasses.dataclass(frozen=True)
class Attributes:
    """What an extraction made of one path."""

    kind: int
    mode: int
    uid: int
    gid: int
    size: int | None
    """None for a directory (its size is the file system's business)."""
    content: bytes | None
    symlink_target: str | None
    device: int | None
    mtime_ns: int | None
    """None for a directory (its entries being made change it)."""
    xattrs: tuple[tuple[str, bytes], ...]


def extracted_tree(root: Path) -> tuple[dict[str, Attributes], set[frozenset[str]]]:
    """Every path below ``root`` with its attributes, and the groups of paths that are one inode."""
    attributes: dict[str, Attributes] = {}
    inodes: defaultdict[int, set[str]] = defaultdict(set)
    for path in walk(root):
        info = os.lstat(path)
        relative = str(path.relative_to(root))
        is_dir = stat.S_ISDIR(info.st_mode)
        attributes[relative] = Attributes(
            kind=stat.S_IFMT(info.st_mode),
            mode=stat.S_IMODE(info.st_mode),
            uid=info.st_uid,
            gid=info.st_gid,
            size=None if is_dir else info.st_size,
            content=path.read_bytes() if stat.S_ISREG(info.st_mode) else None,
            symlink_target=os.readlink(path) if stat.S_ISLNK(info.st_mode) else None,
            device=info.st_rdev if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else None,
            mtime_ns=None if is_dir else info.st_mtime_ns,
            xattrs=xattrs(path),
        )
        if not is_dir:
            inodes[info.st_ino].add(relative)
    return attributes, {frozenset(paths) for paths in inodes.values()}


def gnu_tar_extract(blob: Path, destination: Path) -> None:
    """The reference: GNU tar as root keeping numeric owners, modes, user xattrs and file capabilities."""
    destination.mkdir()
    subprocess.run(
        [
            "tar",
            "--numeric-owner",
            "--same-owner",
            "--same-permissions",
            "--xattrs",
            "--xattrs-include=user.*",
            "--xattrs-include=security.capability",
            "-xf",
            blob,
            "-C",
            destination,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},  # names are UTF-8 in PAX headers; keep them as they are
    )


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(layer=legitimate_layers())
@example(
    layer=[
        Entry("dir", "bin", mode=0o755),
        Entry("file", "bin/su", mode=0o4755, uid=0, gid=0, mtime=1_700_000_000, content=b"\x7fELF"),
        Entry("file", "bin/ping", mode=0o755, mtime=5, content=b"ping", xattrs=(("security.capability", CAPABILITY),)),
        Entry("hardlink", "bin/su2", mode=0o4755, mtime=1_700_000_000, linkname="bin/su"),
        Entry("dir", "home", mode=0o2775, uid=1000, gid=1000),
        Entry("file", "home/owned", mode=0o6750, uid=1000, gid=1000, content=b"mine", xattrs=(("user.k", b"\xff"),)),
        Entry("symlink", "home/up", uid=1000, gid=1000, mtime=7, linkname="../../../etc/shadow"),
        Entry("symlink", "abs", mtime=8, linkname="/etc/passwd"),
        Entry("fifo", "home/pipe", mode=0o600, mtime=9),
        Entry("char", "null", mode=0o666, mtime=10, device=(1, 3)),
    ]
)
def test_legitimate_layers_unpack_as_gnu_tar_extracts_them(tmp_path: Path, layer: list[Entry]) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch_name:
        scratch = Path(scratch_name)
        blob = scratch / "layer.tar"
        diff_id = write_layer(blob, layer)
        unpacked = scratch / "unpacked"
        unpack.unpack(blob, unpacked, diff_id)
        reference = scratch / "reference"
        gnu_tar_extract(blob, reference)
        unpacked_paths, unpacked_inodes = extracted_tree(unpacked)
        reference_paths, reference_inodes = extracted_tree(reference)
        assert unpacked_paths == reference_paths
        assert unpacked_inodes == reference_inodes


@pytest.mark.parametrize(
    "replacement",
    [Entry("file", "a/b", content=b"now a file"), Entry("symlink", "a/b", linkname="x"), Entry("file", "a/.wh.b")],
    ids=["file", "symlink", "whiteout"],
)
def test_a_directory_replaced_later_in_the_layer(tmp_path: Path, replacement: Entry) -> None:
    """A later entry may replace a directory made earlier in the same layer (as tar does); the unpacker must go
    on in the parent it already holds, not in a descriptor closed with the removed directory."""
    blob = tmp_path / "layer.tar"
    layer = [Entry("dir", "a", mode=0o755), Entry("dir", "a/b"), Entry("file", "a/b/inside"), replacement]
    diff_id = write_layer(blob, [*layer, Entry("file", "a/after", content=b"still in a")])
    unpacked = tmp_path / "unpacked"
    unpack.unpack(blob, unpacked, diff_id)
    assert (unpacked / "a" / "after").read_bytes() == b"still in a"
    replaced = os.lstat(unpacked / "a" / "b")
    if replacement.kind == "symlink":
        assert os.readlink(unpacked / "a" / "b") == "x"
    elif replacement.name.endswith(".wh.b"):
        assert stat.S_ISCHR(replaced.st_mode)
        assert replaced.st_rdev == 0
    else:
        assert (unpacked / "a" / "b").read_bytes() == b"now a file"
