"""CNI: the network configuration hulld uses for pods, found the way the kubelet's runtimes find it.

The first ``*.conflist`` / ``*.conf`` / ``*.json`` file (by name) in ``network.cni_conf_dir`` is the pod
network; the plugins it names must be in one of ``network.cni_bin_dirs``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hulld.config import NetworkConfig

SUFFIXES = (".conflist", ".conf", ".json")


def network_config(network: NetworkConfig) -> tuple[Path, dict[str, Any]] | None:
    """The pod network's configuration file and its content, as a conflist; None if there is none."""
    if not network.cni_conf_dir.is_dir():
        return None
    for path in sorted(network.cni_conf_dir.iterdir()):
        if path.suffix not in SUFFIXES or not path.is_file():
            continue
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "plugins" not in data:  # a single-plugin .conf: the same as a list of one
            data = {
                "cniVersion": data.get("cniVersion", "0.4.0"),
                "name": data.get("name", path.stem),
                "plugins": [data],
            }
        return path, data
    return None


def plugin_path(network: NetworkConfig, plugin: str) -> Path | None:
    for directory in network.cni_bin_dirs:
        candidate = directory / plugin
        if candidate.is_file():
            return candidate
    return None


def readiness_problem(network: NetworkConfig) -> str | None:
    """Why pod networking cannot work now, or None if it can."""
    found = network_config(network)
    if found is None:
        return f"no CNI network configuration in {network.cni_conf_dir}"
    path, data = found
    for plugin in data["plugins"]:
        kind = plugin.get("type", "")
        if not kind or "/" in kind or plugin_path(network, kind) is None:
            return f"{path}: CNI plugin {kind!r} not found in {', '.join(map(str, network.cni_bin_dirs))}"
    return None
