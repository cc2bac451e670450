"""Pod sandboxes: pinned namespaces, the pod network (CNI), hostname, /etc/hosts and resolv.conf, and the
infra container of the pods that need one.

A pod's network, IPC and UTS namespaces are pinned by bind mounts (``node.namespaces``) and containers join
them by path, so most pods need no process of their own. Two kinds do, and get an infra container from the
pod's handler (``spec.infra``): pods whose containers share one PID namespace (its PID 1 holds it), and pods
of a handler that runs a whole pod in one sandbox (gVisor: the infra is the sandbox, the containers join it).
Stopping stops the infra and tears down the network and the namespaces; removing deletes the record and
files. Both are idempotent, as the CRI requires.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from hulld import errors, validation
from hulld.config import Config
from hulld.node import cgroups, cni, namespaces
from hulld.runtimes.base import ContainerPaths, ContainerStdio, PortConnection
from hulld.runtimes.registry import Handlers
from hulld.spec import container as container_spec
from hulld.spec import infra
from hulld.store.records import SandboxRecord, SandboxStatus
from hulld.store.table import Table

logger = logging.getLogger(__name__)

HOST_RESOLV_CONF = Path("/etc/resolv.conf")


def sandbox_name(metadata: dict[str, Any]) -> str:
    return "_".join(
        str(metadata.get(key, 0 if key == "attempt" else "")) for key in ("name", "namespace", "uid", "attempt")
    )


class Sandboxes:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.records = Table(config.storage.root / "records" / "sandboxes", SandboxRecord)
        self.files = config.storage.root / "sandboxes"
        self.namespace_dir = config.storage.state / "ns"
        self.exits = config.storage.state / "exits"
        self.pause_rootfs = config.storage.root / "pause" / "rootfs"
        self._pause_source: tuple[str, int, int] | None = None
        """The pause binary the rootfs holds a copy of (path, size, mtime): copied again only if it changes."""
        self.handlers = Handlers(config)
        self._setting_up: dict[str, threading.Event] = {}
        """Sandboxes whose RunPodSandbox is under way, set when it ends (see ``_settled``)."""
        namespaces.prepare(self.namespace_dir)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.handlers.reconfigure(config)

    def handler(self, name: str) -> str:
        handler = name or self.config.runtime.default_handler
        if handler not in self.config.handlers:
            raise errors.NotFound(f"runtime handler {name!r} is not configured on this node")
        return handler

    def directory(self, record: SandboxRecord) -> Path:
        return self.files / record.id

    # --- RunPodSandbox ----------------------------------------------------------------------------------------

    def run(self, request: dict[str, Any], handler_name: str, *, private: bool) -> SandboxRecord:
        """``request`` is the PodSandboxConfig as a dict (see cri.runtime_service); ``private``: made through
        the private socket."""
        handler = self.handler(handler_name)
        self.handlers.get(handler)  # refuses handlers that cannot run pods, before anything is made
        validation.pod(
            request, pod_log_root=self.config.storage.pod_log_root, cgroup_driver=self.config.runtime.cgroup_driver
        )
        metadata = request.get("metadata", {})
        linux = request.get("linux", {})
        options = linux.get("securityContext", {}).get("namespaceOptions", {})
        host_network = options.get("network") == "NODE"
        # Protobuf's JSON mapping leaves out enum zero values: a missing mode is POD (0), not CONTAINER.
        pid_mode = options.get("pid", "POD")
        record = SandboxRecord(
            id=secrets.token_hex(32),
            name=sandbox_name(metadata),
            metadata=metadata,
            labels=request.get("labels", {}),
            annotations=request.get("annotations", {}),
            handler=handler,
            created_at=time.time_ns(),
            hostname=request.get("hostname", "") or Path("/proc/sys/kernel/hostname").read_text().strip(),
            log_directory=request.get("logDirectory", ""),
            cgroup_parent=linux.get("cgroupParent", ""),
            cgroup_driver=self.config.runtime.cgroup_driver,
            sysctls=linux.get("sysctls", {}),
            port_mappings=tuple(
                {
                    "hostPort": mapping.get("hostPort", 0),
                    "containerPort": mapping.get("containerPort", 0),
                    "protocol": mapping.get("protocol", "TCP").lower(),
                    "hostIP": mapping.get("hostIp", ""),
                }
                for mapping in request.get("portMappings", [])
                if mapping.get("hostPort")
            ),
            host_network=host_network,
            host_ipc=options.get("ipc") == "NODE",
            host_pid=pid_mode == "NODE",
            private=private,
            shared_pid=pid_mode == "POD",
            status=SandboxStatus(),
        )
        record = self.records.add(record)  # claims the name first: a second RunPodSandbox of the pod fails
        setting_up = self._setting_up[record.id] = threading.Event()
        try:
            return self._set_up(record, request.get("dnsConfig", {}))
        except BaseException:
            self._tear_down(self.records.find(record.id) or record)  # as far as it got: namespaces, network, infra
            self._discard(record)
            raise
        finally:
            del self._setting_up[record.id]
            setting_up.set()

    def _settled(self, sandbox_id: str) -> SandboxRecord | None:
        """The sandbox's record once a RunPodSandbox of it under way has ended. The record is listed from the
        start (it claims the pod's name), so a Stop or Remove can come meanwhile: tearing down then would miss
        what the set-up makes after, and pull its files from under it."""
        record = self.records.find(sandbox_id)
        if record is not None and (setting_up := self._setting_up.get(record.id)) is not None:
            setting_up.wait()
            record = self.records.find(record.id)
        return record

    def _set_up(self, record: SandboxRecord, dns: dict[str, Any]) -> SandboxRecord:
        directory = self.directory(record)
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        pinned = namespaces.pin(
            self.namespace_dir,
            record.id,
            record.hostname,
            net=not record.host_network,
            ipc=not record.host_ipc,
            uts=not record.host_network,
        )
        paths = {
            kind: str(path)
            for kind, path in (("net", pinned.net), ("ipc", pinned.ipc), ("uts", pinned.uts))
            if path is not None
        }
        record = self.records.set(record.id, namespaces=paths)
        ip, extra, network = "", [], {}
        if not record.host_network:
            try:
                attachment = cni.attach(
                    self.config.network,
                    container_id=record.id,
                    netns=Path(paths["net"]),
                    args=self._cni_args(record),
                    port_mappings=record.port_mappings,
                )
            except cni.NetworkError as error:
                raise errors.FailedPrecondition(f"setting up the pod network: {error}") from error
            ip, extra = attachment.ip, list(attachment.additional_ips)
            network = {"config": attachment.config, "result": attachment.result}
        (directory / "hostname").write_text(record.hostname + "\n")
        (directory / "hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            + (f"{ip}\t{record.hostname}\n" if ip else "")
        )
        self._write_resolv_conf(directory / "resolv.conf", dns, record.host_network)
        record = self.records.set(record.id, ip=ip, additional_ips=tuple(extra), network=network)
        if record.shared_pid or self.handlers.get(record.handler).sandbox_per_pod:
            record = self._start_infra(record)
        return record

    # --- the infra container ----------------------------------------------------------------------------------

    def infra_paths(self, record: SandboxRecord) -> ContainerPaths:
        directory = self.directory(record) / "infra"
        return ContainerPaths(bundle=directory / "bundle", log=None, exits=self.exits, persist=directory / "persist")

    def _start_infra(self, record: SandboxRecord) -> SandboxRecord:
        handler = self.handlers.get(record.handler)
        record = self.records.set(record.id, infra_id=secrets.token_hex(32))  # recorded before it is made
        self._prepare_pause_rootfs()
        paths = self.infra_paths(record)
        paths.bundle.mkdir(parents=True, exist_ok=True, mode=0o700)
        (paths.bundle / "config.json").write_text(
            json.dumps(infra.build(record, record.status.infra_id, self.pause_rootfs))
        )
        infra_id = record.status.infra_id
        pid = handler.create(infra_id, f"{record.name}_infra", paths, infra_id, ContainerStdio())
        handler.start(record.status.infra_id, paths)
        return self.records.set(record.id, infra_pid=pid)

    def _prepare_pause_rootfs(self) -> None:
        """The infra's root filesystem: the static busybox as /bin/busybox and /bin/sh, and the directories the
        runtime mounts over. Made on the first infra container, and again when the configured binary changes."""
        source = self.config.runtime.pause_binary
        try:
            info = source.stat()
        except OSError as error:
            raise errors.FailedPrecondition(f"runtime.pause_binary {source}: {error.strerror}") from error
        key = (str(source), info.st_size, info.st_mtime_ns)
        if key == self._pause_source:
            return
        for name in ("bin", "proc", "dev", "sys"):
            (self.pause_rootfs / name).mkdir(parents=True, exist_ok=True, mode=0o755)
        binary = self.pause_rootfs / "bin" / "busybox"
        staged = binary.with_name(".busybox")
        shutil.copyfile(source, staged)
        staged.chmod(0o755)
        staged.replace(binary)
        shell = self.pause_rootfs / "bin" / "sh"
        if not shell.is_symlink():
            shell.symlink_to("busybox")
        self._pause_source = key

    def infra_exited(self, record: SandboxRecord) -> bool:
        """Whether the pod's infra container has exited (the pod's sandbox process is gone)."""
        handler = self.handlers.find(record.handler)
        if not record.status.infra_id or handler is None:
            return False
        return handler.exit_status(record.status.infra_id, self.infra_paths(record)) is not None

    def _stop_infra(self, record: SandboxRecord) -> None:
        handler = self.handlers.find(record.handler)
        if not record.status.infra_id or handler is None:
            return
        try:
            if record.status.infra_pid and not self.infra_exited(record):
                handler.signal(record.status.infra_id, signal.SIGKILL, self.infra_paths(record))
                deadline = time.monotonic() + 30
                while not self.infra_exited(record) and time.monotonic() < deadline:
                    time.sleep(0.01)
            handler.delete(record.status.infra_id, self.infra_paths(record))
        except errors.HulldError as error:
            logger.warning("sandbox %s: stopping its infra container: %s", record.id, error)
        (self.exits / record.status.infra_id).unlink(missing_ok=True)

    @staticmethod
    def _write_resolv_conf(path: Path, dns: dict[str, Any], host_network: bool) -> None:
        if not dns.get("servers") and not dns.get("searches") and not dns.get("options"):
            shutil.copyfile(HOST_RESOLV_CONF, path) if HOST_RESOLV_CONF.exists() else path.write_text("")
            return
        lines = [f"nameserver {server}" for server in dns.get("servers", [])]
        if dns.get("searches"):
            lines.append("search " + " ".join(dns["searches"]))
        if dns.get("options"):
            lines.append("options " + " ".join(dns["options"]))
        path.write_text("\n".join(lines) + "\n")

    def _cni_args(self, record: SandboxRecord) -> str:
        metadata = record.metadata
        return (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={metadata.get('namespace', '')};"
            f"K8S_POD_NAME={metadata.get('name', '')};K8S_POD_INFRA_CONTAINER_ID={record.id};"
            f"K8S_POD_UID={metadata.get('uid', '')}"
        )

    # --- Stop / Remove ----------------------------------------------------------------------------------------

    def _tear_down(self, record: SandboxRecord) -> None:
        self._stop_infra(record)
        if record.status.network and record.status.namespaces.get("net"):
            net = Path(record.status.namespaces["net"])
            # gVisor's sandbox takes the pod's addresses off its interface (its own network stack holds them),
            # and the bridge plugin's DEL finds what to tear down (the pod's masquerade chain) from the addresses
            # on the interface: without them it would leave the chain behind, one per pod. So they go back first,
            # as the ADD left them.
            addresses = cni.pod_addresses(record.status.network.get("result") or {})
            namespaces.restore_addresses(net, cni.POD_INTERFACE, addresses)
            try:
                cni.detach(
                    self.config.network,
                    container_id=record.id,
                    netns=net,
                    args=self._cni_args(record),
                    attachment=record.status.network,
                    port_mappings=record.port_mappings,
                )
            except cni.NetworkError as error:
                logger.warning("sandbox %s: CNI DEL: %s", record.id, error)
        namespaces.remove(
            namespaces.Pinned(
                net=Path(record.status.namespaces["net"]) if "net" in record.status.namespaces else None,
                ipc=Path(record.status.namespaces["ipc"]) if "ipc" in record.status.namespaces else None,
                uts=Path(record.status.namespaces["uts"]) if "uts" in record.status.namespaces else None,
            )
        )

    def stop(self, sandbox_id: str) -> None:
        record = self._settled(sandbox_id)
        if record is None:
            return  # CRI: stopping an unknown sandbox succeeds
        if record.status.state == "NOTREADY" and not record.status.network and not record.status.infra_id:
            return  # torn down already
        self._tear_down(record)
        self.records.set(record.id, state="NOTREADY", network={}, infra_id="", infra_pid=0)

    def remove(self, sandbox_id: str) -> None:
        record = self._settled(sandbox_id)
        if record is None:
            return  # CRI: removing an unknown sandbox succeeds
        self.stop(record.id)
        self._discard(record)

    def _discard(self, record: SandboxRecord) -> None:
        """What is left of a torn-down pod: hulld's own pod cgroup (the runtime made it for the infra container
        and removes only the infra's below it), the pod's files, its record."""
        if record.cgroup.owned:  # a kubelet's pod cgroup is the kubelet's to remove
            cgroups.remove(record.cgroup)
        shutil.rmtree(self.directory(record), ignore_errors=True)
        self.records.remove(record)

    # --- UpdatePodSandboxResources --------------------------------------------------------------------------

    def update_resources(self, record: SandboxRecord, resources: dict[str, Any], overhead: dict[str, Any]) -> None:
        """Called after the kubelet resized the pod's cgroup (in-place pod resize): resize what hulld owns of the
        pod, its own pod cgroup (a pod without a cgroup parent) and its sandbox (a gVisor pod's), and keep the
        new size."""
        if record.status.state != "READY":
            raise errors.FailedPrecondition(f"sandbox {record.id} is not ready")
        limits = container_spec.pod_resources(resources, overhead)
        if record.cgroup.owned:
            cgroups.apply_limits(record.cgroup, limits)
        handler = self.handlers.get(record.handler)
        if record.status.infra_pid and handler.sandbox_per_pod:
            handler.update_resources(record.status.infra_id, limits)
        self.records.set(record.id, resources=limits)

    def check_ready(self, sandbox_id: str) -> SandboxRecord:
        """The pod, if it is ready (a port-forward can reach it)."""
        record = self.get(sandbox_id)
        if record.status.state != "READY":
            raise errors.FailedPrecondition(f"pod sandbox {record.id} is not ready")
        return record

    def connect(self, sandbox_id: str, port: int) -> PortConnection:
        """A TCP connection to ``port`` on the pod's loopback (a port-forward's, when its client connects)."""
        record = self.check_ready(sandbox_id)
        network = record.status.namespaces.get("net")
        handler = self.handlers.get(record.handler)
        return handler.connect(record.status.infra_id, Path(network) if network else None, port)

    def interface_counters(self, record: SandboxRecord) -> dict[str, namespaces.InterfaceCounters]:
        """The counters of a ready pod's network interfaces (none for the host's network)."""
        network = record.status.namespaces.get("net")
        if record.status.state != "READY" or not network:
            return {}
        try:
            return namespaces.interface_counters(Path(network))
        except OSError as error:  # removed meanwhile
            logger.info("sandbox %s: no interface counters: %s", record.id, error)
            return {}

    def refresh(self, record: SandboxRecord) -> SandboxRecord:
        """A ready pod whose infra container exited is not ready any more (the kubelet makes a new one)."""
        if record.status.state != "READY" or not self.infra_exited(record):
            return record
        logger.warning("sandbox %s: its infra container exited; the pod is not ready", record.id)
        try:
            return self.records.set(record.id, state="NOTREADY")
        except errors.NotFound:
            return record  # removed meanwhile

    def get(self, sandbox_id: str) -> SandboxRecord:
        return self.refresh(self.records.get(sandbox_id))

    def all(self) -> list[SandboxRecord]:
        return [self.refresh(record) for record in self.records.list()]
