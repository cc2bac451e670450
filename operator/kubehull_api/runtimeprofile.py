"""RuntimeProfile: the admin's whole interface to kubehull (cluster-scoped, short name ``rp``).

A profile says which CRI handler pods of one RuntimeClass run under, how that handler is configured, which
nodes get it, and the pod overhead it costs. The operator turns it into a RuntimeClass and into entries of
the selected nodes' NodeRuntimes, and reports back in ``status``.
"""

from __future__ import annotations

import datetime
from typing import Annotated

from pydantic import ConfigDict, Field

from kubehull_api.common import (
    API_VERSION,
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    Condition,
    IntOrString,
    KubeModel,
    LabelSelector,
    ObjectMeta,
    Quantity,
    Toleration,
    cel,
    list_map,
)
from kubehull_api.engines import ENGINES, Engine, RuntimeType, option_rules

KIND = "RuntimeProfile"
PLURAL = "runtimeprofiles"

# Absolute, no whitespace; CEL below also refuses ".." segments.
SAFE_PATH = r"^/\S*$"
NO_DOTDOT = {"rule": r"!self.matches('(^|/)\\.\\.(/|$)')", "message": "must not contain '..' path segments"}
ANNOTATION_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_./]*\*?$"
"""An annotation name, or a prefix of names ending in '*' (hulld's allowed_annotations)."""
MAX_FAILURES = 10
"""status.failures holds at most this many entries."""
MAX_LISTED = 20
"""status.namespaces lists at most this many names."""

HostPath = Annotated[str, Field(max_length=4096, pattern=SAFE_PATH, json_schema_extra=cel(NO_DOTDOT))]


class RuntimeSpec(KubeModel):
    """How the handler runs containers."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            {
                "rule": "!(self.engine == 'kata' && has(self.runtimeType) && self.runtimeType == 'oci')",
                "message": "engine kata runs pods in VMs through its containerd shim: runtimeType must be vm",
                "fieldPath": ".runtimeType",
            },
            {
                "rule": "self.engine != 'custom' || has(self.path)",
                "message": "engine custom has no default binary: path is required",
                "fieldPath": ".path",
            },
            {
                "rule": "!has(self.configPath) || self.engine == 'kata' || "
                "(has(self.runtimeType) && self.runtimeType == 'vm')",
                "message": "configPath is for vm (containerd shim v2) handlers: OCI runtimes take no config file",
                "fieldPath": ".configPath",
            },
            {
                "rule": "!has(self.options) || size(self.options) == 0 || "
                "!(has(self.runtimeType) && self.runtimeType == 'vm')",
                "message": "options are an OCI runtime's flags: a vm (containerd shim v2) handler reads its "
                "configPath instead",
                "fieldPath": ".options",
            },
            *option_rules(),
        )
    )

    engine: Engine
    """The runtime engine: runc, crun, gvisor (runsc), kata, or custom."""
    runtime_type: RuntimeType | None = None
    """oci (an OCI runtime binary) or vm (a containerd shim v2). Default: vm for kata, oci otherwise."""
    path: HostPath | None = None
    """Absolute path of the runtime binary (the shim for vm). Default per engine: runc /usr/bin/runc, crun
    /usr/bin/crun, gvisor /usr/bin/runsc, kata /usr/bin/containerd-shim-kata-v2; custom must set it."""
    config_path: HostPath | None = None
    """Absolute path of an engine configuration file (e.g. Kata's configuration.toml)."""
    options: dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict,
        max_length=32,
        json_schema_extra=cel(
            {
                "rule": "self.all(k, size(k) <= 63 && k.matches('^[a-zA-Z][a-zA-Z0-9]*$') && k != 'root')",
                "message": "option names are camelCase words of at most 63 characters "
                "(they become the runtime's --flags); root is hulld's",
            }
        ),
    )
    """Engine-specific settings. runc, crun: systemdCgroup (true|false). gvisor: platform (systrap|ptrace|kvm),
    network (sandbox|host|none), debug (true|false), debugLog (a path). kata: none. custom: anything."""
    privileged_without_host_devices: bool = False
    """Privileged pods of this handler do not get the host's devices (as containerd's option of that name)."""
    allowed_annotations: list[Annotated[str, Field(max_length=253, pattern=ANNOTATION_PATTERN)]] = Field(
        default_factory=list, max_length=32
    )
    """Pod and container annotations (exact names, or prefixes ending in *) that are passed to the runtime;
    none by default. io.kubernetes.cri.* never pass (hulld sets those itself)."""

    def resolved_runtime_type(self) -> RuntimeType:
        return self.runtime_type or ENGINES[self.engine].runtime_type

    def resolved_path(self) -> str:
        path = self.path or ENGINES[self.engine].path
        if path is None:  # the CRD's CEL rule makes custom profiles name their path
            raise ValueError(f"engine {self.engine} needs spec.runtime.path")
        return path


class Overhead(KubeModel):
    """Resources a pod of this class costs on top of its containers (RuntimeClass overhead)."""

    pod_fixed: dict[Annotated[str, Field(max_length=253)], Quantity] | None = Field(default=None, max_length=16)
    """Fixed overhead per pod, e.g. {cpu: 250m, memory: 160Mi}. Unset: the engine's default (kata 250m CPU /
    160Mi memory, gvisor 100m CPU / 64Mi memory, none for runc, crun and custom); set (even empty): exactly this."""


class Rollout(KubeModel):
    max_unavailable: IntOrString = Field(
        default=1,
        json_schema_extra=cel(
            {
                "rule": "type(self) == int ? self >= 1 : self.matches('^(100|[1-9][0-9]?)%$')",
                "message": "maxUnavailable must be a positive integer or a percentage from 1% to 100%",
            }
        ),
    )
    """How many selected nodes may be reconfiguring (or failing) at once: a number, or a percentage of the
    selected nodes rounded up. Default 1."""

    def budget(self, selected: int) -> int:
        if isinstance(self.max_unavailable, int):
            return self.max_unavailable
        percent = int(self.max_unavailable.rstrip("%"))
        return max(1, -(-selected * percent // 100))


class NamespaceDefault(KubeModel):
    """Make the profile's RuntimeClass the default of whole namespaces: the operator owns a
    MutatingAdmissionPolicy that sets it on new pods there that name none (and, enforced, a
    ValidatingAdmissionPolicy that refuses pods naming another)."""

    namespace_selector: LabelSelector
    """The namespaces covered (by their labels); {} selects every namespace but the exempt ones."""
    enforce: bool = False
    """Refuse pods in the covered namespaces that name another RuntimeClass (naming none is never possible
    there: they get this one)."""
    exempt_namespaces: list[Annotated[str, Field(max_length=63, pattern=DNS1123_LABEL)]] = Field(
        default_factory=list, max_length=64
    )
    """Namespaces never covered, whatever their labels; kube-system and kubehull's own namespace always are."""


class RuntimeProfileSpec(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            {
                "rule": "has(self.runtimeClassName) == has(oldSelf.runtimeClassName) && "
                "(!has(self.runtimeClassName) || self.runtimeClassName == oldSelf.runtimeClassName)",
                "message": "runtimeClassName is immutable; create a new RuntimeProfile instead",
                "fieldPath": ".runtimeClassName",
            }
        )
    )

    handler: str = Field(
        max_length=63,
        pattern=DNS1123_LABEL,
        json_schema_extra=cel(
            {"rule": "self == oldSelf", "message": "handler is immutable; create a new RuntimeProfile instead"}
        ),
    )
    """The CRI runtime handler name (a DNS-1123 label), as the RuntimeClass and hulld know it. Immutable."""
    runtime: RuntimeSpec
    """The runtime behind the handler."""
    node_selector: LabelSelector = Field(default_factory=LabelSelector)
    """The nodes that get this handler; empty selects every node."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Tolerations added to pods of this RuntimeClass (RuntimeClass scheduling.tolerations)."""
    overhead: Overhead = Field(default_factory=Overhead)
    """The pod overhead of the RuntimeClass."""
    runtime_class_name: str | None = Field(default=None, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """Name of the RuntimeClass to manage; defaults to the profile's name. Immutable."""
    rollout: Rollout = Field(default_factory=Rollout)
    """How fast a change reaches the selected nodes."""
    namespace_default: NamespaceDefault | None = None
    """Make this profile's RuntimeClass the default (or the only one) for the pods of some namespaces."""

    def resolved_overhead(self) -> dict[str, str]:
        if self.overhead.pod_fixed is not None:
            return {name: str(value) for name, value in self.overhead.pod_fixed.items()}
        return dict(ENGINES[self.runtime.engine].overhead)


class NodeCounts(KubeModel):
    desired: int = 0
    """Nodes the profile selects."""
    ready: int = 0
    """Selected nodes whose handler runs this profile's configuration and passed its probe."""
    updating: int = 0
    """Selected nodes not there yet: waiting for their turn, or being reconfigured."""
    failed: int = 0
    """Selected nodes whose handler reported not ready for this configuration."""


class NodeFailure(KubeModel):
    node: str
    """The node's name."""
    reason: str
    """Why, in one CamelCase word."""
    message: str = ""
    """Details from the node agent."""


class NamespaceCoverage(KubeModel):
    count: int = 0
    """Namespaces whose new pods get this profile's RuntimeClass."""
    names: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=MAX_LISTED)
    """The first of them by name (at most 20)."""
    conflicts: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=MAX_LISTED)
    """Selected namespaces that an older profile covers (at most 20): this profile leaves them to it."""


class RuntimeProfileStatus(KubeModel):
    observed_generation: int | None = None
    """The .metadata.generation this status describes."""
    runtime_class_name: str | None = None
    """The RuntimeClass this profile manages."""
    ready: str | None = None
    """ready/desired nodes, for kubectl get."""
    conditions: list[Condition] = Field(default_factory=list, max_length=16, json_schema_extra=list_map("type"))
    """Ready, RuntimeClassReady, NodesReady, Degraded; NamespaceDefault with spec.namespaceDefault."""
    nodes: NodeCounts = Field(default_factory=NodeCounts)
    """Node counts of the rollout."""
    failures: list[NodeFailure] = Field(default_factory=list, max_length=MAX_FAILURES)
    """Up to 10 nodes on which the handler failed, and why."""
    namespaces: NamespaceCoverage | None = None
    """With spec.namespaceDefault: the namespaces covered."""


class RuntimeProfile(KubeModel):
    """Runs pods of one RuntimeClass under one CRI handler on the selected nodes."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=dict)
    spec: RuntimeProfileSpec
    status: RuntimeProfileStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def uid(self) -> str:
        return str(self.metadata.get("uid", ""))

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation", 0))

    @property
    def created(self) -> datetime.datetime:
        stamp = self.metadata.get("creationTimestamp")
        if stamp is None:
            return datetime.datetime.max.replace(tzinfo=datetime.UTC)
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))

    @property
    def deleting(self) -> bool:
        return self.metadata.get("deletionTimestamp") is not None

    @property
    def runtime_class_name(self) -> str:
        return self.spec.runtime_class_name or self.name
