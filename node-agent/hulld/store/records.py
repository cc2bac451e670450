"""The records hulld keeps per sandbox and per container.

A record's identity and configuration never change after creation; ``state`` and the fields after it are
the status, changed only through ``Table.update``/``Table.set``, which apply the change to the record as it
is at that moment under the table's lock (never to a caller's older copy) and refuse a removed record. Both
are one versioned JSON document per object.

Sandbox states:   READY ──StopPodSandbox──▶ NOTREADY ──RemovePodSandbox──▶ (gone)
Container states: CREATED ──start──▶ RUNNING ──exit/stop──▶ EXITED ──remove──▶ (gone); UNKNOWN if the
                  runtime lost it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

VERSION = 1
R = TypeVar("R", bound="Record")


@dataclasses.dataclass
class Record:
    id: str
    name: str
    """Unique among records of its kind: the CRI's metadata, joined."""

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, "kind": type(self).__name__, **dataclasses.asdict(self)})

    @classmethod
    def from_json(cls: type[R], text: str) -> R:
        data = json.loads(text)
        if data.pop("version", None) != VERSION or data.pop("kind", None) != cls.__name__:
            raise ValueError(f"not a version {VERSION} {cls.__name__} record")
        return cls(**data)


@dataclasses.dataclass
class SandboxRecord(Record):
    metadata: dict[str, Any]
    labels: dict[str, str]
    annotations: dict[str, str]
    handler: str
    created_at: int
    hostname: str
    log_directory: str
    cgroup_parent: str
    sysctls: dict[str, str]
    port_mappings: list[dict[str, Any]]
    host_network: bool
    host_ipc: bool
    host_pid: bool
    namespaces: dict[str, str]
    """Pinned namespace files by kind (net, ipc, uts); absent kinds are the host's."""
    private: bool = False
    """Made through the private socket (the node agent's): the other socket never sees it, nor its containers."""
    shared_pid: bool = False
    """One PID namespace for the pod's containers (the CRI's POD mode, Kubernetes' shareProcessNamespace)."""
    infra_id: str = ""
    """The pod's infra container, if it needs a sandbox process (a shared PID namespace, a gVisor sandbox)."""
    # --- status ---
    state: str = "READY"
    ip: str = ""
    additional_ips: list[str] = dataclasses.field(default_factory=list)
    network: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The CNI configuration and result of ADD, for DEL; empty once the network is torn down."""
    infra_pid: int = 0
    """The infra container's PID 1 (host PID); its PID namespace is the pod's when ``shared_pid``."""
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The pod's size (OCI linux.resources) from its last UpdatePodSandboxResources."""


@dataclasses.dataclass
class ContainerRecord(Record):
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
    mounts: list[dict[str, Any]]
    private: bool = False
    """Its sandbox's ``private``."""
    # --- status ---
    state: str = "CREATED"
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
