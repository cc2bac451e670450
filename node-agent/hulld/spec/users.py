"""Who a container runs as: the CRI's run_as_user / run_as_username / run_as_group, else the image's User,
resolved against the image's own /etc/passwd and /etc/group (never the host's)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hulld import errors


@dataclasses.dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]


def _entries(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _inside(rootfs: Path, relative: str) -> Path:
    """The file in the container's rootfs, refusing a symlink that leaves it."""
    path = (rootfs / relative).resolve()
    if not path.is_relative_to(rootfs.resolve()):
        raise errors.FailedPrecondition(f"/{relative} in the image points outside it")
    return path


def resolve(rootfs: Path, user: str, group: str | None, supplemental: tuple[int, ...]) -> Identity:
    """``user`` is "name", "uid", "name:group" or "uid:gid" (the image's User, or the CRI's)."""
    passwd = _entries(_inside(rootfs, "etc/passwd"))
    groups = _entries(_inside(rootfs, "etc/group"))
    name, _, group_part = (user or "0").partition(":")
    group = group if group is not None else (group_part or None)
    if name.isdigit():
        uid = int(name)
        entry = next((e for e in passwd if len(e) > 3 and e[2] == name), None)
    else:
        entry = next((e for e in passwd if e[0] == name and len(e) > 3), None)
        if entry is None:
            raise errors.FailedPrecondition(f"user {name!r} is not in the image's /etc/passwd")
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None else 0
    if group is not None:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((g for g in groups if g[0] == group and len(g) > 2), None)
            if found is None:
                raise errors.FailedPrecondition(f"group {group!r} is not in the image's /etc/group")
            gid = int(found[2])
    login = entry[0] if entry is not None else None
    member_of = tuple(int(g[2]) for g in groups if len(g) > 3 and login and login in g[3].split(","))
    # The primary group leads the list, as containerd does, so `id` shows it among the groups.
    additional = tuple(dict.fromkeys((gid, *member_of, *supplemental)))
    return Identity(uid=uid, gid=gid, additional_gids=additional)
