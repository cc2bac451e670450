"""hulld's configuration file (TOML), typed and validated section by section.

    hulld --config /etc/hulld/config.toml

An invalid file is refused as a whole with a message naming the field; on SIGHUP hulld keeps its current
configuration if the new file is invalid. docs/hulld.md documents every field with an example.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

AbsolutePath = Annotated[Path, Field(description="an absolute path")]
HandlerName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


UNIX_SOCKET_PATH_MAX = 107
"""Bytes in a unix socket's path at most (``sun_path`` holds 108 with the terminating NUL); a longer one fails
only when bound, with an error that names no setting."""


def _absolute(path: Path, field: str) -> Path:
    if not path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{field} must be an absolute path without '..', got {str(path)!r}")
    return path


def _socket_path(socket: Path, field: str) -> None:
    if len(os.fsencode(socket)) > UNIX_SOCKET_PATH_MAX:
        raise ValueError(
            f"{field} is too long: the unix socket {str(socket)!r} would have {len(os.fsencode(socket))} bytes,"
            f" more than the {UNIX_SOCKET_PATH_MAX} a socket's path may have"
        )


def shim_events_socket(state: Path, handler: str) -> Path:
    """Where a shim v2 handler's shims send their events: the longest socket path hulld makes under
    ``storage.state``, and short whatever the handler's name."""
    return state / "shim-events" / f"{hashlib.sha256(handler.encode()).hexdigest()[:16]}.sock"


class ServerConfig(Section):
    socket: Path = Path("/run/hulld/hulld.sock")
    """The kubelet's CRI socket. It and its directory are created root-only (0600 / 0700)."""
    private_socket: Path = Path("/run/hulld/private.sock")
    """A second CRI socket, root-only too, for the node agent's handler probes. Pods made through one socket
    do not exist for the other (listings, lookups by ID, events), like containerd's namespaces. Default:
    ``private.sock`` beside ``socket``."""
    metrics_address: str = "127.0.0.1:9103"
    """host:port for Prometheus metrics; empty turns them off."""

    @model_validator(mode="before")
    @classmethod
    def _private_socket_beside_the_socket(cls, data: Any) -> Any:
        if isinstance(data, dict) and "socket" in data and "private_socket" not in data:
            return {**data, "private_socket": str(Path(str(data["socket"])).parent / "private.sock")}
        return data

    @model_validator(mode="after")
    def _paths(self) -> ServerConfig:
        _absolute(self.socket, "server.socket")
        _absolute(self.private_socket, "server.private_socket")
        _socket_path(self.socket, "server.socket")
        _socket_path(self.private_socket, "server.private_socket")
        if self.socket == self.private_socket:
            raise ValueError("server.private_socket must differ from server.socket")
        return self


class StreamingConfig(Section):
    address: str = "127.0.0.1"
    """Where the streaming server (kubectl exec, attach, port-forward) listens. The kubelet on the node is its
    only client, and the single-use token in each URL its only credential: keep it on loopback unless the
    kubelet reaches the runtime over the network."""
    port: int = Field(default=0, ge=0, le=65535)
    """0: a free port chosen at start (the URL the CRI returns names it)."""
    tls_cert_file: Path | None = None
    """A PEM certificate (chain) for the streaming server; with ``tls_key_file`` it serves https and the URLs
    say so (read at start). For a kubelet that reaches the runtime over the network; on loopback, plain http."""
    tls_key_file: Path | None = None
    """The certificate's PEM private key."""

    @model_validator(mode="after")
    def _tls(self) -> StreamingConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("streaming.tls_cert_file and streaming.tls_key_file go together")
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            _absolute(self.tls_cert_file, "streaming.tls_cert_file")
            _absolute(self.tls_key_file, "streaming.tls_key_file")
        return self


class StorageConfig(Section):
    root: Path = Path("/var/lib/hulld")
    """Persistent state: images, layers, sandbox and container records."""
    state: Path = Path("/run/hulld")
    """Volatile state (gone at reboot): pinned namespaces, monitor sockets."""
    pod_log_root: Path = Path("/var/log/pods")
    """Every pod's log directory must be inside it (the kubelet's is /var/log/pods)."""

    @model_validator(mode="after")
    def _paths(self) -> StorageConfig:
        _absolute(self.root, "storage.root")
        _absolute(self.state, "storage.state")
        _socket_path(shim_events_socket(self.state, "any"), "storage.state")
        _absolute(self.pod_log_root, "storage.pod_log_root")
        return self


class ImagesConfig(Section):
    """What one image may cost hulld: bounds against hostile registries and images."""

    max_manifest_bytes: int = Field(default=4 << 20, gt=0)
    """A manifest or index (the distribution spec's recommended limit is 4 MiB)."""
    max_config_bytes: int = Field(default=8 << 20, gt=0)
    max_layers: int = Field(default=128, gt=0)
    max_layer_bytes: int = Field(default=16 << 30, gt=0)
    """A layer's compressed size, and separately its uncompressed tar stream."""
    max_layer_entries: int = Field(default=1_000_000, gt=0)


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


OptionName = Annotated[str, Field(pattern=r"^[a-zA-Z][a-zA-Z0-9]*$", max_length=63)]
OptionValue = Annotated[str, Field(pattern=r"^[^\x00\n\r]*$", max_length=1024)]
AnnotationPattern = Annotated[str, Field(pattern=r"^[A-Za-z0-9][-A-Za-z0-9_./]*\*?$", max_length=253)]
RESERVED_OPTIONS = ("root", "systemdCgroup")
"""Runtime flags hulld sets itself (runtime_root, runtime.cgroup_driver): an option may not override them."""
RUNC_SHIM = "containerd-shim-runc-v2"
"""containerd's runc shim: it takes runc's options (containerd.runc.v1.Options, filled in by hulld), no file."""


class HandlerConfig(Section):
    runtime_type: Literal["oci", "vm"] = "oci"
    runtime_path: Path
    """The OCI runtime binary (oci), or the containerd shim v2 binary (vm: containerd-shim-kata-v2, gVisor's
    containerd-shim-runsc-v1, containerd-shim-runc-v2)."""
    runtime_root: Path | None = None
    """The runtime's --root state directory; default <storage.state>/runtimes/<handler>."""
    config_path: Path | None = None
    """The engine's own configuration file, for vm handlers (Kata's configuration.toml, the runsc shim's
    runsc.toml), passed to the shim as containerd's CRI does (runtime options); OCI runtimes and containerd's
    runc shim take none, so such a handler with one is refused rather than silently ignored. Under the systemd
    cgroup driver, gVisor's shim gets a copy with ``runsc_config.systemd-cgroup = "true"`` added."""
    options: dict[OptionName, OptionValue] = Field(default_factory=dict)
    """The runtime's global flags (oci): ``platform = "systrap"`` is ``--platform=systrap``."""
    privileged_without_host_devices: bool = False
    """Privileged containers of this handler get no host devices (as containerd's option of that name)."""
    sandbox_per_pod: bool = False
    """The runtime runs all containers of a pod in one sandbox (gVisor's runsc): every pod gets an infra
    container that is the sandbox, and each container joins it (one kernel, one network stack per pod)."""
    allowed_annotations: tuple[AnnotationPattern, ...] = ()
    """Pod and container annotations passed into the OCI spec: exact names, or prefixes ending in ``*``.
    None by default; ``io.kubernetes.cri.*`` never (hulld sets those itself)."""

    @model_validator(mode="after")
    def _paths(self) -> HandlerConfig:
        _absolute(self.runtime_path, "runtime_path")
        if self.runtime_root is not None:
            _absolute(self.runtime_root, "runtime_root")
        if self.config_path is not None:
            _absolute(self.config_path, "config_path")
            if self.runtime_type == "oci":
                raise ValueError("config_path has no meaning for an oci handler (OCI runtimes take no config file)")
        if self.config_path is not None and self.runtime_path.name == RUNC_SHIM:
            raise ValueError(f"config_path: {RUNC_SHIM} reads no configuration file (hulld sets its runc options)")
        if self.options and self.runtime_type == "vm":
            raise ValueError("options are an OCI runtime's flags; a vm handler's shim reads its config_path instead")
        for reserved in RESERVED_OPTIONS:
            if reserved in self.options:
                raise ValueError(f"options.{reserved} is set by hulld itself and cannot be an option")
        return self


class RuntimeConfig(Section):
    default_handler: HandlerName = "runc"
    """The handler for pods that name none (RuntimeClass-less pods)."""
    cgroup_driver: Literal["cgroupfs", "systemd"] = "cgroupfs"
    """How pod and container cgroups are made, as the kubelet's ``cgroupDriver``: ``cgroupfs`` (directories) or
    ``systemd`` (a slice per pod, a scope per container, through systemd: what kubeadm configures). A change
    applies to new pods."""
    pause_binary: Path = Path("/bin/busybox")
    """A static busybox (Debian's busybox-static): the one binary of the pod infra container, whose shell
    waits as the pod's PID 1 (reaping orphans) for pods that need a sandbox process."""

    @model_validator(mode="after")
    def _paths(self) -> RuntimeConfig:
        _absolute(self.pause_binary, "runtime.pause_binary")
        return self


class Config(Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
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
