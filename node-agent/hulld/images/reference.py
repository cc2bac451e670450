"""Image references as the kubelet and crictl write them, normalised the way Docker and containerd do.

``busybox`` is ``docker.io/library/busybox:latest``; a first component with a dot, a colon or ``localhost`` is
a registry host; ``name@sha256:...`` pins a digest.
"""

from __future__ import annotations

import dataclasses
import re

from hulld import errors

DEFAULT_HOST = "docker.io"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
TAG = re.compile(r"^[\w][\w.-]{0,127}$")
COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


@dataclasses.dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}"

    @property
    def tagged(self) -> str | None:
        return f"{self.name}:{self.tag}" if self.tag else None


def parse(text: str) -> Reference:
    if not text or len(text) > 4096 or any(char.isspace() for char in text):
        raise errors.InvalidArgument(f"invalid image reference {text!r}")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST.match(digest):
            raise errors.InvalidArgument(f"invalid image reference {text!r}: only sha256 digests are supported")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not TAG.match(tag):
            raise errors.InvalidArgument(f"invalid image reference {text!r}: bad tag {tag!r}")
    parts = rest.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        host, path = parts[0], parts[1:]
    else:
        host, path = DEFAULT_HOST, parts
    if host == DEFAULT_HOST and len(path) == 1:
        path = ["library", *path]
    if not path or not all(COMPONENT.match(component) for component in path):
        raise errors.InvalidArgument(f"invalid image reference {text!r}: bad repository name")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(host=host, repository="/".join(path), tag=tag, digest=digest)
