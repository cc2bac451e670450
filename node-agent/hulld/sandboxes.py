"""Pod sandboxes: pinned namespaces, the pod network (CNI), hostname, /etc/hosts and resolv.conf.

A sandbox has no process of its own (unless a later release adds shared PID namespaces): its network, IPC and
UTS namespaces are pinned by bind mounts (``node.namespaces``), and containers join them by path. Stopping
tears down the network and the namespaces; removing deletes the record and files. Both are idempotent, as the
CRI requires.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from hulld import errors, validation
from hulld.config import Config
from hulld.node import cni, namespaces
from hulld.store.records import SandboxRecord
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
        namespaces.prepare(self.namespace_dir)

    def reconfigure(self, config: Config) -> None:
        self.config = config

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
        validation.pod(request, pod_log_root=self.config.storage.pod_log_root)
        metadata = request.get("metadata", {})
        linux = request.get("linux", {})
        options = linux.get("securityContext", {}).get("namespaceOptions", {})
        host_network = options.get("network") == "NODE"
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
            sysctls=linux.get("sysctls", {}),
            port_mappings=[
                {
                    "hostPort": mapping.get("hostPort", 0),
                    "containerPort": mapping.get("containerPort", 0),
                    "protocol": mapping.get("protocol", "TCP").lower(),
                    "hostIP": mapping.get("hostIp", ""),
                }
                for mapping in request.get("portMappings", [])
                if mapping.get("hostPort")
            ],
            host_network=host_network,
            host_ipc=options.get("ipc") == "NODE",
            host_pid=options.get("pid") == "NODE",
            namespaces={},
            private=private,
        )
        if options.get("pid") == "POD":
            raise errors.Unimplemented("pods sharing one PID namespace (shareProcessNamespace) are not supported yet")
        record = self.records.add(record)  # claims the name first: a second RunPodSandbox of the pod fails
        try:
            return self._set_up(record, request.get("dnsConfig", {}))
        except BaseException:
            self._tear_down(record)
            self.records.remove(record)
            raise

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
        return self.records.set(record.id, ip=ip, additional_ips=extra, network=network)

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
        if record.network and record.namespaces.get("net"):
            try:
                cni.detach(
                    self.config.network,
                    container_id=record.id,
                    netns=Path(record.namespaces["net"]),
                    args=self._cni_args(record),
                    attachment=record.network,
                    port_mappings=record.port_mappings,
                )
            except cni.NetworkError as error:
                logger.warning("sandbox %s: CNI DEL: %s", record.id, error)
        namespaces.remove(
            namespaces.Pinned(
                net=Path(record.namespaces["net"]) if "net" in record.namespaces else None,
                ipc=Path(record.namespaces["ipc"]) if "ipc" in record.namespaces else None,
                uts=Path(record.namespaces["uts"]) if "uts" in record.namespaces else None,
            )
        )

    def stop(self, sandbox_id: str) -> None:
        record = self.records.find(sandbox_id)
        if record is None:
            return  # CRI: stopping an unknown sandbox succeeds
        if record.state == "NOTREADY" and not record.network:
            return
        self._tear_down(record)
        self.records.set(record.id, state="NOTREADY", network={})

    def remove(self, sandbox_id: str) -> None:
        record = self.records.find(sandbox_id)
        if record is None:
            return  # CRI: removing an unknown sandbox succeeds
        self.stop(record.id)
        shutil.rmtree(self.directory(record), ignore_errors=True)
        self.records.remove(record)

    def get(self, sandbox_id: str) -> SandboxRecord:
        return self.records.get(sandbox_id)

    def all(self) -> list[SandboxRecord]:
        return self.records.list()
