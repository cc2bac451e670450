"""hulld's configuration file (TOML), typed and validated section by section.

    hulld --config /etc/hulld/config.toml

An invalid file is refused as a whole with a message naming the field; on SIGHUP hulld keeps its current
configuration if the new file is invalid. docs/hulld.md documents every field with an example.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

AbsolutePath = Annotated[Path, Field(description="an absolute path")]
HandlerName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute(path: Path, field: str) -> Path:
    if not path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{field} must be an absolute path without '..', got {str(path)!r}")
    return path


class ServerConfig(Section):
    socket: Path = Path("/run/hulld/hulld.sock")
    """The CRI socket. It and its directory are created root-only (0600 / 0700)."""
    metrics_address: str = "127.0.0.1:9103"
    """host:port for Prometheus metrics; empty turns them off."""

    @model_validator(mode="after")
    def _paths(self) -> ServerConfig:
        _absolute(self.socket, "server.socket")
        return self


class StorageConfig(Section):
    root: Path = Path("/var/lib/hulld")
    """Persistent state: images, layers, sandbox and container records."""
    state: Path = Path("/run/hulld")
    """Volatile state (gone at reboot): pinned namespaces, monitor sockets."""

    @model_validator(mode="after")
    def _paths(self) -> StorageConfig:
        _absolute(self.root, "storage.root")
        _absolute(self.state, "storage.state")
        return self


class NetworkConfig(Section):
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    cni_bin_dirs: tuple[Path, ...] = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))

    @model_validator(mode="after")
    def _paths(self) -> NetworkConfig:
        _absolute(self.cni_conf_dir, "network.cni_conf_dir")
        for directory in self.cni_bin_dirs:
            _absolute(directory, "network.cni_bin_dirs")
        return self


class RegistryConfig(Section):
    prefix: str = Field(min_length=1)
    """Which images this entry applies to: a registry host (and optional repository path), e.g.
    "docker.io" or "127.0.0.1:5000/kubehull"; a host without a port covers all its ports."""
    insecure: bool = False
    """Speak plain HTTP to it (or HTTPS without verifying its certificate)."""
    mirrors: tuple[str, ...] = ()
    """Hosts tried, in order, before the registry itself."""


class HandlerConfig(Section):
    runtime_type: Literal["oci", "vm"] = "oci"
    runtime_path: Path
    """The OCI runtime binary (oci) or containerd shim v2 binary (vm)."""
    runtime_root: Path | None = None
    """The runtime's --root state directory; default <storage.state>/runtimes/<handler>."""
    config_path: Path | None = None
    options: dict[str, str] = Field(default_factory=dict)
    privileged_without_host_devices: bool = False
    allowed_annotations: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _paths(self) -> HandlerConfig:
        _absolute(self.runtime_path, "runtime_path")
        if self.runtime_root is not None:
            _absolute(self.runtime_root, "runtime_root")
        if self.config_path is not None:
            _absolute(self.config_path, "config_path")
        return self


class RuntimeConfig(Section):
    default_handler: HandlerName = "runc"
    """The handler for pods that name none (RuntimeClass-less pods)."""
    cgroup_driver: Literal["cgroupfs"] = "cgroupfs"
    """How pod and container cgroups are created; only cgroupfs is supported."""


class Config(Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    registries: tuple[RegistryConfig, ...] = ()
    handlers: dict[HandlerName, HandlerConfig] = Field(
        default_factory=lambda: {"runc": HandlerConfig(runtime_path=Path("/usr/bin/runc"))}
    )

    @model_validator(mode="after")
    def _default_handler_exists(self) -> Config:
        if self.runtime.default_handler not in self.handlers:
            raise ValueError(f"runtime.default_handler {self.runtime.default_handler!r} is not among [handlers]")
        return self

    def registry_for(self, host_and_path: str) -> RegistryConfig | None:
        """The most specific registries entry whose prefix covers ``host/repository``."""
        host = host_and_path.split("/", 1)[0]

        def covers(prefix: str) -> bool:
            if "/" not in prefix and ":" not in prefix and host.rsplit(":", 1)[0] == prefix:
                return True  # a bare host name covers all its ports
            return host_and_path == prefix or host_and_path.startswith(prefix.rstrip("/") + "/")

        matches = [entry for entry in self.registries if covers(entry.prefix)]
        return max(matches, key=lambda entry: len(entry.prefix), default=None)


class ConfigError(Exception):
    pass


def load(path: Path) -> Config:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
        )
        raise ConfigError(f"{path}: {problems}") from error
