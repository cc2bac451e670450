"""The RuntimeDefault seccomp profile, and Localhost profiles, in the OCI spec's form.

RuntimeDefault is the containers-common profile that Podman and CRI-O use (Debian's
golang-github-containers-common, /usr/share/containers/seccomp.json). It is in Docker's format: rules with
``includes``/``excludes`` conditions on capabilities, architectures and kernel version, resolved here for the
container at hand (a rule needing CAP_SYS_ADMIN applies only to containers that have it).
"""

from __future__ import annotations

import functools
import json
import os
import platform
from collections.abc import Collection
from pathlib import Path
from typing import Any

from hulld import errors

RUNTIME_DEFAULT = Path("/usr/share/containers/seccomp.json")
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


def _kernel() -> tuple[int, ...]:
    release = os.uname().release.split("-")[0]
    return tuple(int(part) for part in release.split(".") if part.isdigit())


def _applies(rule: dict[str, Any], capabilities: Collection[str], architecture: str) -> bool:
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if includes.get("caps") and not all(cap in capabilities for cap in includes["caps"]):
        return False
    if includes.get("arches") and architecture not in includes["arches"]:
        return False
    if includes.get("minKernel"):
        wanted = tuple(int(part) for part in includes["minKernel"].split(".") if part.isdigit())
        if _kernel() < wanted:
            return False
    if excludes.get("caps") and any(cap in capabilities for cap in excludes["caps"]):
        return False
    return not (excludes.get("arches") and architecture in excludes["arches"])


def from_docker_format(profile: dict[str, Any], capabilities: Collection[str]) -> dict[str, Any]:
    architecture = ARCHITECTURES.get(platform.machine(), platform.machine())
    native = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64"}.get(architecture, "")
    architectures = []
    for entry in profile.get("archMap") or []:
        if entry["architecture"] == native:
            architectures = [entry["architecture"], *entry.get("subArchitectures", [])]
    syscalls = []
    for rule in profile.get("syscalls", []):
        if not _applies(rule, capabilities, architecture):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        converted: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            converted["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            converted["args"] = [
                {key: arg[key] for key in ("index", "value", "valueTwo", "op") if key in arg} for arg in rule["args"]
            ]
        syscalls.append(converted)
    spec: dict[str, Any] = {
        "defaultAction": profile["defaultAction"],
        "architectures": architectures,
        "syscalls": syscalls,
    }
    if profile.get("defaultErrnoRet") is not None:
        spec["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return spec


@functools.lru_cache(maxsize=32)
def _parsed(path: Path, modified: int) -> dict[str, Any]:
    """The profile file as JSON, read once per version of the file (every container create asks for it)."""
    try:
        profile: dict[str, Any] = json.loads(path.read_text())
    except ValueError as error:
        raise errors.InvalidArgument(f"seccomp profile {path} is not JSON: {error}") from error
    return profile


def load(path: Path, capabilities: Collection[str]) -> dict[str, Any]:
    try:
        profile = _parsed(path, path.stat().st_mtime_ns)
    except FileNotFoundError as error:
        raise errors.FailedPrecondition(f"seccomp profile {path} not found") from error
    if "syscalls" in profile and any("includes" in rule or "names" in rule for rule in profile["syscalls"]):
        return from_docker_format(profile, capabilities)
    return dict(profile)  # already in the OCI form
