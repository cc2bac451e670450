"""Where a pod's and its containers' cgroups are under each cgroup driver (the kubelet's ``cgroupDriver``).

- **cgroupfs**: paths. A pod's cgroup is the kubelet's cgroup parent (``/kubepods/burstable/pod<uid>``) or, for a
  pod without one, hulld's own ``/kubehull/<sandbox id>``; a container's is ``<pod>/<container id>``, which the
  OCI runtime makes.
- **systemd**: units. A pod's cgroup is a slice, the kubelet's (it sends the slice's path, whose last part names
  it: ``kubepods-burstable-pod<uid>.slice``) or hulld's own ``kubehull-<sandbox id>.slice``; a container's is
  the scope ``hulld-<container id>.scope`` in it, which the OCI runtime asks systemd for (cgroupsPath
  ``<slice>:hulld:<id>``: runc's and runsc's systemd mode). A slice's cgroup has a directory per dash-separated
  prefix of its name: ``kubepods-burstable-pod1.slice`` is
  ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import PurePosixPath
from typing import Literal

Driver = Literal["cgroupfs", "systemd"]

SCOPE_PREFIX = "hulld"
SLICE_NAME = re.compile(r"^[A-Za-z0-9_.:]+(-[A-Za-z0-9_.:]+)*\.slice$")
"""A slice the kubelet names (its pod UIDs have ``_`` for ``-``); no escapes, no empty dash-separated part."""


@dataclasses.dataclass(frozen=True)
class PodCgroup:
    driver: Driver
    parent: str
    """The kubelet's cgroup parent for the pod; empty for a pod hulld makes a cgroup for."""
    sandbox_id: str

    @property
    def owned(self) -> bool:
        """hulld made it (the pod came without a cgroup parent): hulld sets its limits and removes it."""
        return not self.parent

    @property
    def slice(self) -> str:
        """The pod's systemd slice (systemd driver): the last part of the parent the kubelet sends (the slice's
        path, ``/kubepods.slice/.../kubepods-burstable-pod<uid>.slice``, as containerd and CRI-O take it)."""
        return PurePosixPath(self.parent).name if self.parent else f"kubehull-{self.sandbox_id}.slice"

    @property
    def path(self) -> str:
        """The pod cgroup's path below a hierarchy's root."""
        if self.driver == "systemd":
            return slice_path(self.slice)
        return "/" + (self.parent or f"/kubehull/{self.sandbox_id}").strip("/")

    def container_path(self, container_id: str) -> str:
        """A container's cgroup path below a hierarchy's root."""
        if self.driver == "systemd":
            return f"{self.path}/{SCOPE_PREFIX}-{container_id}.scope"
        return f"{self.path}/{container_id}"

    def oci_path(self, container_id: str) -> str:
        """A container's OCI ``linux.cgroupsPath``."""
        if self.driver == "systemd":
            return f"{self.slice}:{SCOPE_PREFIX}:{container_id}"
        return self.container_path(container_id)


def slice_path(name: str) -> str:
    """A slice's cgroup path: ``a-b.slice`` is ``/a.slice/a-b.slice`` (``-.slice`` is the root)."""
    stem = name.removesuffix(".slice")
    if stem == "-":
        return "/"
    parts = stem.split("-")
    return "".join(f"/{'-'.join(parts[: depth + 1])}.slice" for depth in range(len(parts)))
