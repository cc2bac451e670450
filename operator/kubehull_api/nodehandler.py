"""NodeHandler: one per node and handler (cluster-scoped, short name ``nh``), named ``<node>.<handler>``.

The operator writes ``spec``: the node and the fully resolved configuration of one handler, tagged with the
profile and generation it came from. The node's agent is the only writer of ``status``: whether the handler
runs that configuration and passed its probe. One object per handler keeps every write small: a profile
change rewrites one small object per node, not every node's whole handler list (docs/api.md says why).

The operator sets the finalizer ``kubehull.io/node-agent`` when it creates one; the agent takes it off once the
handler is out of the node's runtime, so a NodeHandler that is gone is a handler the node no longer runs.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from kubehull_api.common import API_VERSION, DNS1123_LABEL, KubeModel, ObjectMeta, cel
from kubehull_api.engines import Engine, RuntimeType

KIND = "NodeHandler"
PLURAL = "nodehandlers"
FINALIZER = "kubehull.io/node-agent"
"""Held by the node agent: it comes off once the handler is out of the node's runtime."""
NODE_NAME_FIELD = "spec.nodeName"
"""A selectable field: an agent lists and watches its own node's NodeHandlers by it."""

MAX_NAME = 253
# Node names up to this length fit in ``<node>.<handler>`` with any handler name (63 characters at most).
MAX_PLAIN_NODE_NAME = MAX_NAME - 1 - 63
DIGEST_LENGTH = 10


def object_name(node: str, handler: str) -> str:
    """The NodeHandler's name: ``<node>.<handler>``, or for a node name too long for that, the node name cut
    short with a digest of it in place of the rest (still unique, still readable)."""
    if len(node) + 1 + len(handler) <= MAX_NAME:
        return f"{node}.{handler}"
    digest = hashlib.sha256(node.encode()).hexdigest()[:DIGEST_LENGTH]
    kept = node[: MAX_NAME - 1 - len(handler) - 1 - DIGEST_LENGTH].rstrip(".-")
    return f"{kept}-{digest}.{handler}"


class HandlerConfig(KubeModel):
    """One CRI handler as the node's runtime should run it, with every default already applied."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            {"rule": "self.name == oldSelf.name", "message": "name is immutable", "fieldPath": ".name"},
        )
    )

    name: str = Field(max_length=63, pattern=DNS1123_LABEL)
    """The CRI handler name."""
    profile: str = Field(max_length=253)
    """The RuntimeProfile this configuration comes from."""
    profile_generation: int = Field(ge=0)
    """That profile's .metadata.generation when this configuration was last changed."""
    engine: Engine
    runtime_type: RuntimeType
    path: str = Field(max_length=4096)
    """The runtime (oci) or shim (vm) binary."""
    config_path: str | None = Field(default=None, max_length=4096)
    options: dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=32
    )
    privileged_without_host_devices: bool = False
    allowed_annotations: list[Annotated[str, Field(max_length=253)]] = Field(default_factory=list, max_length=32)

    def same_runtime(self, other: HandlerConfig) -> bool:
        """Whether both configure the handler identically (the profile they came from aside)."""
        return self.runtime_digest() == other.runtime_digest()

    def runtime_digest(self) -> str:
        """``sha256:<hex>`` of the runtime settings (the profile they came from aside): what a probe is about."""
        return self._digest

    @functools.cached_property
    def _digest(self) -> str:
        # Computed once per object: the operator compares every node's handlers on every pass, and nothing
        # changes a HandlerConfig once it is made (a new spec is a new object).
        settings = self.model_dump(mode="json", exclude={"profile", "profile_generation"})
        canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    # Equality through the cached digest: the planner compares every node's handler with the desired one on
    # every pass, and pydantic's field-by-field comparison was most of that.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HandlerConfig):
            return NotImplemented
        return (self.profile, self.profile_generation, self._digest) == (
            other.profile,
            other.profile_generation,
            other._digest,
        )

    def __hash__(self) -> int:
        return hash((self.profile, self.profile_generation, self._digest))

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> HandlerConfig:
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("_digest", None)  # the copy's settings may differ: its digest is its own
        return copy


class NodeHandlerSpec(KubeModel):
    node_name: str = Field(
        max_length=253, json_schema_extra=cel({"rule": "self == oldSelf", "message": "nodeName is immutable"})
    )
    """The node that runs the handler."""
    handler: HandlerConfig
    """The handler's configuration on that node."""


class RuntimeInfo(KubeModel):
    name: str = Field(default="", max_length=63)
    """The node's CRI runtime (hulld, containerd)."""
    version: str = Field(default="", max_length=253)
    """Its version."""


class NodeHandlerStatus(KubeModel):
    observed_generation: int | None = None
    """The .metadata.generation of the spec this status reflects."""
    config_digest: str = Field(default="", max_length=71)
    """``sha256:`` digest of the handler's runtime settings this report is about (the operator matches it with
    the spec's, so a report on an older configuration is never taken for one on the new)."""
    ready: bool = False
    """Whether the configuration is applied and a probe container ran under it."""
    reason: str = Field(default="", max_length=128)
    """Why not, in one CamelCase word (BinaryNotFound, InvalidOption, ProbeFailed...)."""
    message: str = Field(default="", max_length=4096)
    """Details."""
    binary_version: str = Field(default="", max_length=1024)
    """What the runtime binary reports as its version."""
    runtime: RuntimeInfo = Field(default_factory=RuntimeInfo)
    """The CRI runtime that runs the handler on the node."""
    last_transition_time: datetime.datetime | None = None
    """When ready or reason last changed."""


class NodeHandler(KubeModel):
    """One handler on one node: its desired configuration (spec) and what the node agent reports (status)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            {
                "rule": f"size(self.spec.nodeName) > {MAX_PLAIN_NODE_NAME}"
                " || self.metadata.name == self.spec.nodeName + '.' + self.spec.handler.name",
                "message": "metadata.name must be <spec.nodeName>.<spec.handler.name>",
            },
        )
    )

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=dict)
    spec: NodeHandlerSpec
    status: NodeHandlerStatus | None = None
