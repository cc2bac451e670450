"""hulld's configuration file from the node's NodeRuntime spec: pure, so what a spec renders to is testable.

The agent owns the ``[handlers]`` section; everything else (socket, storage, network, registries) comes from
the base configuration the node was installed with. Handlers that fail their static checks (their binary is
missing) are left out, keeping the entry hulld last ran for them if there was one: a bad desired
configuration never replaces a good running one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import tomli_w

from kubehull_api.engines import Engine
from kubehull_api.noderuntime import HandlerConfig


def hulld_handler(handler: HandlerConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {"runtime_type": handler.runtime_type.value, "runtime_path": handler.path}
    if handler.config_path:
        entry["config_path"] = handler.config_path
    if handler.options:
        entry["options"] = dict(handler.options)
    if handler.privileged_without_host_devices:
        entry["privileged_without_host_devices"] = True
    if handler.allowed_annotations:
        entry["allowed_annotations"] = list(handler.allowed_annotations)
    if handler.engine == Engine.GVISOR:
        entry["sandbox_per_pod"] = True  # runsc runs a pod's containers in one sandbox
    return entry


def with_cgroup_driver(
    base: Mapping[str, Any], running: Mapping[str, Any] | None, host_runs_systemd: bool
) -> dict[str, Any]:
    """The base configuration with hulld's cgroup driver. hulld reports it to the kubelet, which takes its own
    from that answer when it starts, so a node's driver never changes under it: the base's own if it names
    one (the node image's choice); else the one hulld's configuration ``running`` already has (``cgroupfs``,
    hulld's default, if it names none); and only for a hulld configured for the first time, ``systemd`` on a
    host booted with systemd (as kubeadm configures the kubelet there), ``cgroupfs`` elsewhere."""
    config = copy.deepcopy(dict(base))
    runtime = config.setdefault("runtime", {})
    if running is not None:
        fallback = running.get("runtime", {}).get("cgroup_driver", "cgroupfs")
    else:
        fallback = "systemd" if host_runs_systemd else "cgroupfs"
    runtime.setdefault("cgroup_driver", fallback)
    return config


def render(
    base: Mapping[str, Any], handlers: Iterable[HandlerConfig], excluded: Mapping[str, str], running: Mapping[str, Any]
) -> str:
    """``excluded``: handler name → why it may not be applied; ``running``: the [handlers] hulld runs now."""
    config = copy.deepcopy(dict(base))
    table: dict[str, Any] = dict(config.get("handlers", {}))  # the base's own handlers (the default one)
    for handler in handlers:
        if handler.name in excluded:
            if handler.name in running:
                table[handler.name] = running[handler.name]
            continue
        table[handler.name] = hulld_handler(handler)
    config["handlers"] = dict(sorted(table.items()))
    return tomli_w.dumps(config)
