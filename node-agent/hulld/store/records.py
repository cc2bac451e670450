"""The records hulld keeps: one per sandbox, container and image, each a versioned JSON document on disk.

A record is two frozen parts. Its own fields are what the object *is* — identity and configuration, fixed
when it is made. Its ``status`` is what has *happened* to it, and changes only through ``Table.update`` /
``Table.set``, which apply a change to the status as it is at that moment under the table's lock (never to a
caller's older copy) and refuse a removed record. Nothing can change the rest: the dataclasses are frozen and
the table replaces only the status.

    {"version": 2, "kind": "SandboxRecord", "id": ..., <fields>..., "status": {<status fields>...}}

Version 1 (earlier builds) kept the status fields beside the others; they are read and moved into
``status``. Any other version is refused, not guessed at.

Sandbox states:   READY ──StopPodSandbox──▶ NOTREADY ──RemovePodSandbox──▶ (gone)
Container states: CREATED ──start──▶ RUNNING ──exit/stop──▶ EXITED ──remove──▶ (gone); UNKNOWN if the
                  runtime lost it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, Generic, TypeVar

from hulld.node.cgroups.layout import Driver, PodCgroup

VERSION = 2
S = TypeVar("S")
R = TypeVar("R", bound="Record[Any]")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record(Generic[S]):
    status_type: ClassVar[type]
    id: str
    status: S

    @property
    def unique_name(self) -> str:
        """What no two records of a kind may share (a table refuses the second)."""
        return self.id

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        return json.dumps({"version": VERSION, "kind": type(self).__name__, **fields}, sort_keys=True)

    @classmethod
    def from_json(cls: type[R], text: str) -> R:
        data = json.loads(text)
        version = data.pop("version", None)
        kind = data.pop("kind", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"a {kind} record, not a {cls.__name__}")
        if version == 1:
            status_fields = {field.name for field in dataclasses.fields(cls.status_type)}
            data["status"] = {name: data.pop(name) for name in list(data) if name in status_fields}
        elif version != VERSION:
            raise ValueError(f"{cls.__name__} record of unknown version {version!r}")
        return cls(**{**_decoded(cls, data), "status": cls.status_type(**_decoded(cls.status_type, data["status"]))})


def _decoded(kind: type, data: dict[str, Any]) -> dict[str, Any]:
    """JSON arrays back to the tuples a frozen record holds."""
    tuples = {field.name for field in dataclasses.fields(kind) if str(field.type).startswith("tuple")}
    return {name: tuple(value) if name in tuples else value for name, value in data.items()}


# --- sandboxes -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class SandboxStatus:
    state: str = "READY"
    namespaces: dict[str, str] = dataclasses.field(default_factory=dict)
    """Pinned namespace files by kind (net, ipc, uts); absent kinds are the host's."""
    ip: str = ""
    additional_ips: tuple[str, ...] = ()
    network: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The CNI configuration and result of ADD, for DEL; empty once the network is torn down."""
    infra_id: str = ""
    """The pod's infra container while it has one (a shared PID namespace, a gVisor sandbox); recorded before
    it is made, so a crash in between still finds it to clean up."""
    infra_pid: int = 0
    """The infra container's PID 1 (host PID); its PID namespace is the pod's when ``shared_pid``."""
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The pod's size (OCI linux.resources) from its last UpdatePodSandboxResources."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SandboxRecord(Record[SandboxStatus]):
    status_type = SandboxStatus
    name: str
    """The CRI's metadata, joined: unique among sandboxes."""
    metadata: dict[str, Any]
    labels: dict[str, str]
    annotations: dict[str, str]
    handler: str
    created_at: int
    hostname: str
    log_directory: str
    cgroup_parent: str
    sysctls: dict[str, str]
    port_mappings: tuple[dict[str, Any], ...]
    host_network: bool
    host_ipc: bool
    host_pid: bool
    private: bool = False
    """Made through the private socket (the node agent's): the other socket never sees it, nor its containers."""
    shared_pid: bool = False
    """One PID namespace for the pod's containers (the CRI's POD mode, Kubernetes' shareProcessNamespace)."""
    cgroup_driver: Driver = "cgroupfs"
    """The driver the pod's cgroups were made under (a changed configuration applies to new pods)."""

    @property
    def unique_name(self) -> str:
        return self.name

    @property
    def cgroup(self) -> PodCgroup:
        return PodCgroup(self.cgroup_driver, self.cgroup_parent, self.id)


# --- containers ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContainerStatus:
    state: str = "CREATED"
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pod_oom_kills_at_start: int | None = None
    """The pod cgroup's OOM kill count when the container started (cgroup v2): see ``Containers.refresh``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContainerRecord(Record[ContainerStatus]):
    status_type = ContainerStatus
    name: str
    """The CRI's metadata and its sandbox, joined: unique among containers."""
    sandbox_id: str
    metadata: dict[str, Any]
    labels: dict[str, str]
    annotations: dict[str, str]
    image: str
    """The image as the client named it."""
    image_id: str
    handler: str
    created_at: int
    log_path: str
    mounts: tuple[dict[str, Any], ...]
    private: bool = False
    """Its sandbox's ``private``."""
    stdin: bool = False
    """Created with its input open for attached clients (CRI ``stdin``)."""
    stdin_once: bool = False
    """Its input ends with the first attached client's (CRI ``stdin_once``)."""
    tty: bool = False
    """Runs under a terminal of its own (CRI ``tty``)."""

    @property
    def unique_name(self) -> str:
        return self.name


# --- images --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageStatus:
    repo_tags: tuple[str, ...] = ()
    """Tags move between images (a newer pull of a tag takes it), so they are status."""
    repo_digests: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageRecord(Record[ImageStatus]):
    status_type = ImageStatus
    """``id`` is the image config's digest."""
    layers: tuple[str, ...]
    """diff_ids, bottom layer first."""
    size: int
    """Bytes of the compressed layers and config (what a pull transfers)."""
    config: dict[str, Any]
    """The image config's ``config`` object: Entrypoint, Cmd, Env, User, WorkingDir, ..."""
    manifest_digest: str
