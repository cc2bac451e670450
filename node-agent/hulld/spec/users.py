"""Who a container runs as: the CRI's run_as_user / run_as_username / run_as_group, else the image's User,
resolved against the image's own /etc/passwd and /etc/group (never the host's: they are read with every
symlink resolved inside the container's root filesystem, regular files only, bounded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hulld import errors
from hulld.node import confined

MAX_FILE = 4 << 20
"""/etc/passwd and /etc/group larger than this are refused (real ones are kilobytes)."""
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


@dataclasses.dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]


def _entries(rootfs: Path, path: str) -> list[list[str]]:
    data = confined.read_in_root(rootfs, path, MAX_FILE)
    if data is None:
        return []
    text = data.decode(errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _number(value: str, what: str) -> int:
    if not value.isdigit() or int(value) > MAX_ID:
        raise errors.FailedPrecondition(f"{what} {value!r} is not a valid ID (0 to {MAX_ID})")
    return int(value)


def resolve(rootfs: Path, user: str, group: str | None, supplemental: tuple[int, ...]) -> Identity:
    """``user`` is "name", "uid", "name:group" or "uid:gid" (the image's User, or the CRI's)."""
    passwd = _entries(rootfs, "/etc/passwd")
    groups = _entries(rootfs, "/etc/group")
    name, _, group_part = (user or "0").partition(":")
    group = group if group is not None else (group_part or None)
    if name.isdigit():
        uid = _number(name, "user")
        entry = next((e for e in passwd if len(e) > 3 and e[2] == name), None)
    else:
        entry = next((e for e in passwd if e[0] == name and len(e) > 3), None)
        if entry is None:
            raise errors.FailedPrecondition(f"user {name!r} is not in the image's /etc/passwd")
        uid = _number(entry[2], f"the uid of {name!r} in the image's /etc/passwd")
    gid = _number(entry[3], "a gid in the image's /etc/passwd") if entry is not None else 0
    if group is not None:
        if group.isdigit():
            gid = _number(group, "group")
        else:
            found = next((g for g in groups if g[0] == group and len(g) > 2), None)
            if found is None:
                raise errors.FailedPrecondition(f"group {group!r} is not in the image's /etc/group")
            gid = _number(found[2], f"the gid of {group!r} in the image's /etc/group")
    login = entry[0] if entry is not None else None
    member_of = tuple(
        _number(g[2], "a gid in the image's /etc/group")
        for g in groups
        if len(g) > 3 and login and login in g[3].split(",")
    )
    # The primary group leads the list, as containerd does, so `id` shows it among the groups.
    additional = tuple(dict.fromkeys((gid, *member_of, *supplemental)))
    return Identity(uid=uid, gid=gid, additional_gids=additional)
