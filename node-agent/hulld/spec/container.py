"""The OCI runtime spec (config.json) of one container: pure, from the CRI ContainerConfig (as a dict, the
protobuf JSON mapping), the pod's sandbox record, the image's config and the resolved user.

Defaults follow containerd's CRI plugin: its default capability set, masked and read-only paths, /dev, /proc,
/sys and cgroup mounts; the pod's /etc/hosts, /etc/hostname and /etc/resolv.conf; the seccomp profile the
request names (RuntimeDefault, Localhost, Unconfined; none named is Unconfined, as in the CRI); privileged
containers get every capability and no masks.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from hulld import errors
from hulld.config import HandlerConfig
from hulld.node import devices
from hulld.spec import seccomp
from hulld.spec.users import Identity
from hulld.store.records import SandboxRecord
from hulld.validation import absolute_path

DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
# In kernel order: the position is the capability's number.
KNOWN_CAPABILITIES = tuple(
    f"CAP_{name}"
    for name in (
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    )
)


def _bounding_capabilities() -> tuple[str, ...]:
    """The capabilities hulld itself may grant (its bounding set). "All capabilities" means these, as in
    containerd: asking runc for one outside it (e.g. CAP_SYS_RESOURCE in a restricted VM) fails the container."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return tuple(name for number, name in enumerate(KNOWN_CAPABILITIES) if mask >> number & 1)
    return KNOWN_CAPABILITIES


ALL_CAPABILITIES = _bounding_capabilities()
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
PROPAGATION = {
    "PROPAGATION_PRIVATE": "rprivate",
    "PROPAGATION_HOST_TO_CONTAINER": "rslave",
    "PROPAGATION_BIDIRECTIONAL": "rshared",
}
SANDBOX_FILES = ("hostname", "hosts", "resolv.conf")
RESERVED_ANNOTATIONS = "io.kubernetes.cri."
"""hulld's own annotations to the runtime: a request never sets them."""
CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"


@dataclasses.dataclass(frozen=True)
class Inputs:
    container_id: str
    config: dict[str, Any]
    """The CRI ContainerConfig, as protobuf's JSON mapping (camelCase keys, enum names)."""
    sandbox: SandboxRecord
    sandbox_dir: Path
    handler: HandlerConfig
    image_config: dict[str, Any]
    """The image config's ``config`` object: Entrypoint, Cmd, Env, WorkingDir, User..."""
    rootfs: Path
    identity: Identity
    oom_score_adj_floor: int
    """hulld's own oom_score_adj: without CAP_SYS_RESOURCE a child cannot go lower (restrict_oom_score_adj)."""


def process_args(config: dict[str, Any], image: dict[str, Any]) -> list[str]:
    """Docker's rules: the CRI command replaces the image's Entrypoint, CRI args its Cmd."""
    command, args = config.get("command") or [], config.get("args") or []
    if command:
        return [*command, *args]
    return [*(image.get("Entrypoint") or []), *(args or image.get("Cmd") or [])]


def environment(config: dict[str, Any], image: dict[str, Any]) -> list[str]:
    merged: dict[str, str] = {}
    for entry in image.get("Env") or []:
        key, _, value = entry.partition("=")
        merged[key] = value
    for entry in config.get("envs") or []:
        merged[entry.get("key", "")] = entry.get("value", "")
    merged.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return [f"{key}={value}" for key, value in merged.items() if key]


def _capabilities(security: dict[str, Any]) -> list[str]:
    if security.get("privileged"):
        return list(ALL_CAPABILITIES)
    wanted = dict.fromkeys(DEFAULT_CAPABILITIES)
    requested = security.get("capabilities") or {}

    def names(values: list[str]) -> list[str]:
        return [value.upper() if value.upper().startswith("CAP_") else f"CAP_{value.upper()}" for value in values]

    if "ALL" in [value.upper() for value in requested.get("addCapabilities", [])]:
        wanted = dict.fromkeys(ALL_CAPABILITIES)
    wanted.update(dict.fromkeys(names([v for v in requested.get("addCapabilities", []) if v.upper() != "ALL"])))
    if "ALL" in [value.upper() for value in requested.get("dropCapabilities", [])]:
        wanted = dict.fromkeys(names([v for v in requested.get("addCapabilities", []) if v.upper() != "ALL"]))
    for dropped in names([v for v in requested.get("dropCapabilities", []) if v.upper() != "ALL"]):
        wanted.pop(dropped, None)
    return list(wanted)


def _mounts(inputs: Inputs) -> list[dict[str, Any]]:
    config = inputs.config
    privileged = bool(config.get("linux", {}).get("securityContext", {}).get("privileged"))
    sys_options = ["nosuid", "noexec", "nodev"] + ([] if privileged else ["ro"])
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
        {
            "destination": "/dev/shm",  # noqa: S108 - the container's /dev/shm, its own tmpfs
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
    ]
    requested = config.get("mounts") or []
    taken = {mount.get("containerPath") for mount in requested}
    for name in SANDBOX_FILES:
        destination = f"/etc/{name}"
        if destination not in taken and (inputs.sandbox_dir / name).exists():
            mounts.append(
                {
                    "destination": destination,
                    "type": "bind",
                    "source": str(inputs.sandbox_dir / name),
                    "options": ["rbind", "rprivate", "rw"],
                }
            )
    for mount in requested:  # paths and propagation checked by hulld.validation
        host, container = mount["hostPath"], mount["containerPath"]
        if not os.path.exists(host):
            raise errors.NotFound(f"mount source {host} does not exist")
        options = ["rbind", PROPAGATION[mount.get("propagation", "PROPAGATION_PRIVATE")]]
        options.append("ro" if mount.get("readonly") else "rw")
        mounts.append({"destination": container, "type": "bind", "source": host, "options": options})
    return mounts


def _devices(config: dict[str, Any], handler: HandlerConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The device nodes and the device cgroup rules: the requested devices, and for a privileged container
    every host device with every device allowed, unless its handler says privileged_without_host_devices."""
    privileged = bool(config.get("linux", {}).get("securityContext", {}).get("privileged"))
    with_host_devices = privileged and not handler.privileged_without_host_devices
    nodes = devices.host_devices() if with_host_devices else []
    rules = [{"allow": with_host_devices, "access": "rwm"}]
    for requested in config.get("devices") or []:  # paths and permissions checked by hulld.validation
        node = devices.device(requested["hostPath"], requested.get("containerPath", ""))
        nodes = [existing for existing in nodes if existing["path"] != node["path"]] + [node]
        rules.append(
            {
                "allow": True,
                "type": node["type"],
                "major": node["major"],
                "minor": node["minor"],
                "access": requested.get("permissions") or "rwm",
            }
        )
    return nodes, rules


def runtime_annotations(patterns: tuple[str, ...], *sources: dict[str, str]) -> dict[str, str]:
    """The annotations of ``sources`` (pod, then container) that the handler lets through to the runtime."""

    def allowed(name: str) -> bool:
        if name.startswith(RESERVED_ANNOTATIONS):
            return False
        return any(name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])) for pattern in patterns)

    return {name: value for source in sources for name, value in source.items() if allowed(name)}


def container_resources(linux_resources: dict[str, Any]) -> dict[str, Any]:
    """CRI LinuxContainerResources → OCI linux.resources (cpu, memory; what cgroup v1 offers)."""
    cpu: dict[str, Any] = {}
    for source, target in (("cpuShares", "shares"), ("cpuQuota", "quota"), ("cpuPeriod", "period")):
        if int(linux_resources.get(source, 0) or 0):
            cpu[target] = int(linux_resources[source])
    for source, target in (("cpusetCpus", "cpus"), ("cpusetMems", "mems")):
        if linux_resources.get(source):
            cpu[target] = linux_resources[source]
    result: dict[str, Any] = {}
    if cpu:
        result["cpu"] = cpu
    limit = int(linux_resources.get("memoryLimitInBytes", 0) or 0)
    if limit:
        result["memory"] = {"limit": limit}
        swap = int(linux_resources.get("memorySwapLimitInBytes", 0) or 0)
        if swap:
            result["memory"]["swap"] = swap
    return result


def pod_resources(resources: dict[str, Any], overhead: dict[str, Any]) -> dict[str, Any]:
    """A pod's OCI linux.resources from UpdatePodSandboxResources: its containers' sum plus the pod overhead,
    as the kubelet sizes the pod's cgroup. A dimension the containers leave unlimited stays unlimited."""
    combined = dict(resources)
    for field in ("cpuShares", "cpuQuota", "memoryLimitInBytes"):
        if int(resources.get(field, 0) or 0) > 0:
            combined[field] = int(resources[field]) + max(0, int(overhead.get(field, 0) or 0))
    return container_resources(combined)


def pid_namespace(sandbox: SandboxRecord, in_sandbox: bool) -> dict[str, str] | None:
    """The PID namespace a container of ``sandbox`` joins: the infra's if shared, a new one, or (None) the
    host's, or for a container in a sandbox runtime's pod (``in_sandbox``) sharing it, the sandbox's: gVisor
    puts a container whose spec names no PID namespace in the root one, where the infra runs."""
    if sandbox.host_pid or (in_sandbox and sandbox.shared_pid):
        return None
    if sandbox.shared_pid and sandbox.status.infra_pid:
        return {"type": "pid", "path": f"/proc/{sandbox.status.infra_pid}/ns/pid"}
    return {"type": "pid"}


def container_annotations(sandbox: SandboxRecord) -> dict[str, str]:
    """What tells a sandbox runtime (runsc) that a container joins its pod's sandbox; ignored by runc."""
    if not sandbox.status.infra_id:
        return {}
    return {CONTAINER_TYPE: "container", SANDBOX_ID: sandbox.status.infra_id}


def _working_dir(config: dict[str, Any], image: dict[str, Any]) -> str:
    """The request's (checked by hulld.validation), else the image's, which must be absolute too."""
    image_dir = str(image.get("WorkingDir") or "/")
    if not image_dir.startswith("/") or "\x00" in image_dir:
        raise errors.FailedPrecondition(f"the image's WorkingDir {image_dir!r} is not an absolute path")
    return str(config.get("workingDir") or image_dir)


def build(inputs: Inputs) -> dict[str, Any]:
    config, sandbox = inputs.config, inputs.sandbox
    linux = config.get("linux") or {}
    security = linux.get("securityContext") or {}
    privileged = bool(security.get("privileged"))
    capabilities = _capabilities(security)
    args = process_args(config, inputs.image_config)
    if not args:
        raise errors.InvalidArgument(
            "the container has no command: the image has no Entrypoint or Cmd, and the request gives none"
        )
    requested_adj = int((linux.get("resources") or {}).get("oomScoreAdj", 0) or 0)
    process: dict[str, Any] = {
        "terminal": bool(config.get("tty")),
        "user": {
            "uid": inputs.identity.uid,
            "gid": inputs.identity.gid,
            "additionalGids": list(inputs.identity.additional_gids),
        },
        "args": args,
        "env": environment(config, inputs.image_config),
        "cwd": _working_dir(config, inputs.image_config),
        "capabilities": {kind: capabilities for kind in ("bounding", "effective", "permitted")},
        "noNewPrivileges": bool(security.get("noNewPrivs")),
        "oomScoreAdj": max(requested_adj, inputs.oom_score_adj_floor),
    }
    namespaces: list[dict[str, Any]] = [{"type": "mount"}]
    # Protobuf's JSON mapping leaves out enum zero values: a missing mode is POD (0), the pod's.
    container_pid = (security.get("namespaceOptions") or {}).get("pid", "POD")
    if container_pid == "TARGET":
        raise errors.Unimplemented("sharing another container's PID namespace (pid TARGET) is not supported yet")
    if container_pid == "CONTAINER" and not sandbox.host_pid:
        namespaces.append({"type": "pid"})
    elif container_pid == "POD" and (pid := pid_namespace(sandbox, inputs.handler.sandbox_per_pod)) is not None:
        namespaces.append(pid)
    for kind, oci in (("net", "network"), ("ipc", "ipc"), ("uts", "uts")):
        if kind in sandbox.status.namespaces:
            namespaces.append({"type": oci, "path": sandbox.status.namespaces[kind]})
    device_nodes, device_rules = _devices(config, inputs.handler)
    spec_resources = container_resources(linux.get("resources") or {})
    spec_resources["devices"] = device_rules
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": str(inputs.rootfs), "readonly": bool(security.get("readonlyRootfs"))},
        "mounts": _mounts(inputs),
        "annotations": runtime_annotations(
            inputs.handler.allowed_annotations, sandbox.annotations, config.get("annotations") or {}
        )
        | container_annotations(sandbox),
        "linux": {
            "namespaces": namespaces,
            "resources": spec_resources,
            "cgroupsPath": sandbox.cgroup.oci_path(inputs.container_id),
            "devices": device_nodes,
            "sysctl": dict(sandbox.sysctls),
        },
    }
    if "uts" in sandbox.status.namespaces:  # with the host's UTS namespace the host's name stands
        spec["hostname"] = sandbox.hostname
    if not privileged:
        spec["linux"]["maskedPaths"] = list(MASKED_PATHS)
        spec["linux"]["readonlyPaths"] = list(READONLY_PATHS)
        # As the CRI (and containerd) define it: no profile given is Unconfined; the kubelet always says which.
        # The message is present but empty when RuntimeDefault (enum 0) was asked for.
        profile: dict[str, Any] | None = security.get("seccomp")
        kind = "Unconfined" if profile is None else profile.get("profileType", "RuntimeDefault")
        if kind == "RuntimeDefault":
            spec["linux"]["seccomp"] = seccomp.load(seccomp.RUNTIME_DEFAULT, capabilities)
        elif kind == "Localhost" and profile is not None:
            path = absolute_path(profile.get("localhostRef", ""), "linux.security_context.seccomp.localhost_ref")
            spec["linux"]["seccomp"] = seccomp.load(Path(path), capabilities)
    return spec
