"""Which profiles are in force, what handler configuration each resolves to, and which nodes it selects.

A profile is in force unless it is being deleted or conflicts: two profiles that name one handler with
different runtime settings conflict, and the newer one (by creation time, then name) loses.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

from kubehull_api.noderuntime import HandlerConfig
from kubehull_api.runtimeprofile import RuntimeProfile
from kubehull_operator.reconcile.model import NodeRecord, Snapshot


def handler_config(profile: RuntimeProfile) -> HandlerConfig:
    """The profile's handler with every default resolved, as the node agent will apply it."""
    runtime = profile.spec.runtime
    return HandlerConfig(
        name=profile.spec.handler,
        profile=profile.name,
        profile_generation=profile.generation,
        engine=runtime.engine,
        runtime_type=runtime.resolved_runtime_type(),
        path=runtime.resolved_path(),
        config_path=runtime.config_path,
        options=dict(runtime.options),
        privileged_without_host_devices=runtime.privileged_without_host_devices,
        allowed_annotations=list(runtime.allowed_annotations),
    )


@dataclasses.dataclass(frozen=True)
class Placement:
    active: Mapping[str, RuntimeProfile]
    """Profiles in force, by name."""
    configs: Mapping[str, HandlerConfig]
    """Each active profile's resolved handler, by profile name."""
    conflicts: Mapping[str, str]
    """Profiles that lose a handler conflict: name → the message saying with whom."""
    selected: Mapping[str, frozenset[str]]
    """Active profile name → the names of the nodes it selects."""

    def handlers_on(self, node: str) -> Mapping[str, HandlerConfig]:
        """The handlers desired on ``node``: handler name → config of the oldest active profile selecting it."""
        return self._desired.get(node, {})

    @functools.cached_property
    def _desired(self) -> dict[str, dict[str, HandlerConfig]]:
        # Every node's, at once: asked for each node in every pass.
        desired: dict[str, dict[str, HandlerConfig]] = {}
        for name, profile in self.active.items():  # oldest first
            for node in self.selected[name]:
                desired.setdefault(node, {}).setdefault(profile.spec.handler, self.configs[name])
        return desired


def by_age(profiles: Mapping[str, RuntimeProfile]) -> list[RuntimeProfile]:
    return sorted(profiles.values(), key=lambda profile: (profile.created, profile.name))


def selects(profile: RuntimeProfile, node: NodeRecord) -> bool:
    return profile.spec.node_selector.matches(node.labels)


def place(snapshot: Snapshot) -> Placement:
    active: dict[str, RuntimeProfile] = {}
    configs: dict[str, HandlerConfig] = {}
    conflicts: dict[str, str] = {}
    owners: dict[str, RuntimeProfile] = {}  # handler → the oldest profile in force that names it
    for profile in by_age(snapshot.profiles):
        if profile.deleting:
            continue
        config = handler_config(profile)
        owner = owners.get(profile.spec.handler)
        if owner is not None and not configs[owner.name].same_runtime(config):
            conflicts[profile.name] = (
                f"handler {profile.spec.handler} is already configured with other runtime settings by "
                f"RuntimeProfile {owner.name}; give this profile its own handler or the same runtime settings"
            )
            continue
        owners.setdefault(profile.spec.handler, profile)
        active[profile.name] = profile
        configs[profile.name] = config
    selected = {
        name: frozenset(node.name for node in snapshot.nodes.values() if selects(profile, node))
        for name, profile in active.items()
    }
    return Placement(active=active, configs=configs, conflicts=conflicts, selected=selected)
