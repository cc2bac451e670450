"""NodeRuntime: one per Node, named like it (cluster-scoped, short name ``nr``).

The operator writes ``spec``: the fully resolved handler configurations this node should run, each tagged with
the profile and generation it came from. The node's agent is the only writer of ``status``: what hulld runs,
and whether each handler passed its probe.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
from typing import Annotated, Any

from pydantic import Field

from kubehull_api.common import API_VERSION, DNS1123_LABEL, Condition, KubeModel, ObjectMeta, atomic_list, list_map
from kubehull_api.engines import Engine, RuntimeType

KIND = "NodeRuntime"
PLURAL = "noderuntimes"


class NodeRuntimeEntry(KubeModel):
    """An entry of a NodeRuntime's handler lists."""

    def wire(self) -> dict[str, Any]:
        """The entry as its writer sends it: every field equal to its default left out. The NodeRuntime's schema
        has no defaults (``crd.py``): a default would be stored, patched and sent to the watchers with every write
        of every node; readers parse entries with these models, which apply the defaults."""
        return self.model_dump(by_alias=True, exclude_defaults=True, mode="json")


class HandlerConfig(NodeRuntimeEntry):
    """One CRI handler as hulld should run it, with every default already applied."""

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


class NodeRuntimeSpec(KubeModel):
    handlers: list[HandlerConfig] = Field(default_factory=list, max_length=64, json_schema_extra=atomic_list())
    """The handlers this node should run (written whole by the operator)."""


class RuntimeInfo(KubeModel):
    name: str = ""
    """The CRI runtime's name (hulld)."""
    version: str = ""
    """Its version."""
    ready: bool = False
    """Whether it answers on its socket and reports RuntimeReady."""


class HandlerStatus(NodeRuntimeEntry):
    name: str = Field(max_length=63)
    """The handler."""
    config_digest: str = Field(default="", max_length=71)
    """``sha256:`` digest of the handler's runtime settings this report is about (the operator matches it with
    the spec, so a report on one handler stays current while another is reconfigured)."""
    ready: bool
    """Whether its configuration is applied and a probe container ran under it."""
    reason: str = ""
    """Why not, in one CamelCase word (BinaryNotFound, InvalidOption, ProbeFailed...)."""
    message: str = Field(default="", max_length=4096)
    """Details."""
    binary_version: str = ""
    """What the runtime binary reports as its version."""
    last_probe_time: datetime.datetime | None = None
    """When the last probe ran."""
    probe_duration_seconds: float | None = None
    """How long it took."""


class NodeRuntimeStatus(KubeModel):
    observed_generation: int | None = None
    """The .metadata.generation of the spec this status reflects."""
    runtime: RuntimeInfo = Field(default_factory=RuntimeInfo)
    """The node's CRI runtime."""
    handlers: list[HandlerStatus] = Field(default_factory=list, max_length=64, json_schema_extra=atomic_list())
    """Per-handler readiness (written whole by the node's agent)."""
    handlers_ready: str = Field(default="", max_length=16, pattern=r"^([0-9]+/[0-9]+)?$")
    """Ready handlers of those in the observed spec, e.g. "2/3" (what `kubectl get noderuntimes` shows)."""
    conditions: list[Condition] = Field(default_factory=list, max_length=16, json_schema_extra=list_map("type"))


class NodeRuntime(KubeModel):
    """The runtime configuration of one node: desired handlers (spec) and what the node agent reports (status)."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=dict)
    spec: NodeRuntimeSpec = Field(default_factory=NodeRuntimeSpec)
    status: NodeRuntimeStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation", 0))

    def handler(self, name: str) -> HandlerConfig | None:
        return self._handlers.get(name)

    def handler_status(self, name: str) -> HandlerStatus | None:
        """The agent's report on ``name``, only if it is about the handler's configuration in the spec.

        Matched per handler (by digest), not by the spec's generation: reconfiguring one handler of a node does
        not make the reports on the others stale."""
        config = self.handler(name)
        if self.status is None or config is None:
            return None
        report = self._reports.get(name)
        return report if report is not None and report.config_digest == config.runtime_digest() else None

    # By name, computed once per object: the operator looks up every handler of every node on each pass, and a
    # record is never changed once parsed (a new version of the object is a new record).
    @functools.cached_property
    def _handlers(self) -> dict[str, HandlerConfig]:
        return {handler.name: handler for handler in self.spec.handlers}

    @functools.cached_property
    def _reports(self) -> dict[str, HandlerStatus]:
        return {report.name: report for report in self.status.handlers} if self.status else {}
