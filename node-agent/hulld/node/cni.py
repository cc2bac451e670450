"""CNI: the network configuration hulld uses for pods, found the way the kubelet's runtimes find it.

The first ``*.conflist`` / ``*.conf`` / ``*.json`` file (by name) in ``network.cni_conf_dir`` is the pod
network; the plugins it names must be in one of ``network.cni_bin_dirs``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hulld.config import NetworkConfig

SUFFIXES = (".conflist", ".conf", ".json")
POD_INTERFACE = "eth0"
"""The interface the plugins make in the pod's network namespace (``CNI_IFNAME``)."""


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


class NetworkError(Exception):
    pass


LOOPBACK = {"cniVersion": "1.0.0", "name": "hulld-loopback", "type": "loopback"}


def _invoke(
    network: NetworkConfig,
    command: str,
    plugin: dict[str, Any],
    *,
    container_id: str,
    netns: Path,
    ifname: str,
    args: str,
) -> dict[str, Any]:
    kind = plugin.get("type", "")
    binary = plugin_path(network, kind) if kind and "/" not in kind else None
    if binary is None:
        raise NetworkError(f"CNI plugin {kind!r} not found")
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": str(netns),
        "CNI_IFNAME": ifname,
        "CNI_PATH": ":".join(str(directory) for directory in network.cni_bin_dirs),
        "CNI_ARGS": args,
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    result = subprocess.run(
        [str(binary)], input=json.dumps(plugin), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        try:
            problem = json.loads(result.stdout)
            message = f"{problem.get('msg', '')} {problem.get('details', '')}".strip()
        except ValueError:
            message = (result.stdout + result.stderr).strip()
        raise NetworkError(f"CNI {command} with plugin {kind}: {message}")
    answer: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
    return answer


def _chain(data: dict[str, Any], runtime_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Each plugin's stdin config: the list's name and version, and the runtime config it asks for.

    A plugin that exists only to serve capabilities this pod does not use (portmap for a pod without host
    ports) is left out of the chain, for ADD and DEL alike: it would do nothing but cost an exec."""
    plugins = []
    for plugin in data["plugins"]:
        capabilities = {name for name, on in plugin.get("capabilities", {}).items() if on}
        if plugin.get("type") == "portmap" and capabilities and not any(runtime_config.get(c) for c in capabilities):
            continue
        conf = {**plugin, "name": data.get("name", "pod-network"), "cniVersion": data.get("cniVersion", "0.4.0")}
        wanted = {key: value for key, value in runtime_config.items() if plugin.get("capabilities", {}).get(key)}
        if wanted:
            conf["runtimeConfig"] = wanted
        plugins.append(conf)
    return plugins


@dataclasses.dataclass(frozen=True)
class Attachment:
    ip: str
    additional_ips: tuple[str, ...]
    result: dict[str, Any]
    config: dict[str, Any]
    """The network configuration used, kept so that DEL gets exactly what ADD got."""


def attach(
    network: NetworkConfig, *, container_id: str, netns: Path, args: str, port_mappings: Sequence[dict[str, Any]]
) -> Attachment:
    """CNI ADD: loopback up, then the pod network's plugin chain; returns the pod's IPs."""
    found = network_config(network)
    if found is None:
        raise NetworkError(f"no CNI network configuration in {network.cni_conf_dir}")
    _, data = found
    _invoke(network, "ADD", LOOPBACK, container_id=container_id, netns=netns, ifname="lo", args=args)
    previous: dict[str, Any] | None = None
    for plugin in _chain(data, {"portMappings": list(port_mappings)}):
        if previous is not None:
            plugin["prevResult"] = previous
        previous = _invoke(
            network, "ADD", plugin, container_id=container_id, netns=netns, ifname=POD_INTERFACE, args=args
        )
    ips = [entry["address"].split("/")[0] for entry in (previous or {}).get("ips", [])]
    if not ips:
        raise NetworkError("the CNI plugins returned no IP address for the pod")
    return Attachment(ip=ips[0], additional_ips=tuple(ips[1:]), result=previous or {}, config=data)


def detach(
    network: NetworkConfig,
    *,
    container_id: str,
    netns: Path,
    args: str,
    attachment: dict[str, Any],
    port_mappings: Sequence[dict[str, Any]],
) -> None:
    """CNI DEL, in reverse order, with the configuration and result of the ADD."""
    data = attachment.get("config") or (network_config(network) or (None, None))[1]
    if data is None:
        return
    for plugin in reversed(_chain(data, {"portMappings": list(port_mappings)})):
        if attachment.get("result"):
            plugin["prevResult"] = attachment["result"]
        _invoke(network, "DEL", plugin, container_id=container_id, netns=netns, ifname=POD_INTERFACE, args=args)


def pod_addresses(result: dict[str, Any]) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The addresses (with their prefix) an ADD's result put on the pod's interface; an entry that does not parse
    as one is left out (the result is the plugins' answer, and it reaches a command)."""
    interfaces = result.get("interfaces") or []
    found = []
    for entry in result.get("ips") or []:
        index = entry.get("interface")
        if isinstance(index, int) and 0 <= index < len(interfaces) and not interfaces[index].get("sandbox"):
            continue  # an address on the host's side (a bridge's gateway), not the pod's
        try:
            found.append(ipaddress.ip_interface(str(entry.get("address", ""))))
        except ValueError:
            continue
    return found
