"""CRI RuntimeService: one thin method per RPC, translating to ``hulld.sandboxes`` and ``hulld.containers``.

Requests reach the domain as protobuf's JSON mapping (dicts); answers are built here. Streaming (Exec,
Attach, PortForward) and a few optional RPCs answer UNIMPLEMENTED with the reason (docs/hulld.md).

One servicer serves one socket: the kubelet's, or the private one of the node agent. Each sees only the pods
made through it (``private`` on the records): in listings, stats and events, and by ID, where another
socket's pod is NOT_FOUND (and stopping or removing it a no-op, as for any unknown ID).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from typing import Any

from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc
from google.protobuf import json_format

from hulld import __version__, errors
from hulld.config import Config
from hulld.containers import Containers
from hulld.node import cni
from hulld.sandboxes import Sandboxes
from hulld.store.records import ContainerRecord, SandboxRecord

CRI_VERSION = "0.1.0"
NOT_YET = ("UpdatePodSandboxResources",)
STREAMING = ("Exec", "Attach", "PortForward")
UNSUPPORTED = {
    "CheckpointContainer": "hulld does not support container checkpoints",
    "ListMetricDescriptors": "hulld does not serve CRI metrics; the kubelet uses cAdvisor",
    "ListPodSandboxMetrics": "hulld does not serve CRI metrics; the kubelet uses cAdvisor",
}
CONTAINER_STATES = {
    "CREATED": cri.CONTAINER_CREATED,
    "RUNNING": cri.CONTAINER_RUNNING,
    "EXITED": cri.CONTAINER_EXITED,
    "UNKNOWN": cri.CONTAINER_UNKNOWN,
}
SANDBOX_STATES = {"READY": cri.SANDBOX_READY, "NOTREADY": cri.SANDBOX_NOTREADY}


def as_dict(message: Any) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(message)
    return data


def _labels_match(labels: dict[str, str], selector: Any) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def sandbox_message(record: SandboxRecord) -> Any:
    return cri.PodSandbox(
        id=record.id,
        metadata=cri.PodSandboxMetadata(**record.metadata),
        state=SANDBOX_STATES[record.state],
        created_at=record.created_at,
        labels=record.labels,
        annotations=record.annotations,
        runtime_handler=record.handler,
    )


def container_message(record: ContainerRecord) -> Any:
    return cri.Container(
        id=record.id,
        pod_sandbox_id=record.sandbox_id,
        metadata=cri.ContainerMetadata(**record.metadata),
        image=cri.ImageSpec(image=record.image),
        image_ref=record.image_id,
        state=CONTAINER_STATES[record.state],
        created_at=record.created_at,
        labels=record.labels,
        annotations=record.annotations,
    )


def container_status(record: ContainerRecord) -> Any:
    return cri.ContainerStatus(
        id=record.id,
        metadata=cri.ContainerMetadata(**record.metadata),
        state=CONTAINER_STATES[record.state],
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        exit_code=record.exit_code,
        image=cri.ImageSpec(image=record.image),
        image_ref=record.image_id,
        image_id=record.image_id,
        reason=record.reason,
        message=record.message,
        labels=record.labels,
        annotations=record.annotations,
        log_path=record.log_path,
        mounts=[json_format.ParseDict(mount, cri.Mount(), ignore_unknown_fields=True) for mount in record.mounts],
    )


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(
        self,
        config: Config,
        sandboxes: Sandboxes,
        containers: Containers,
        *,
        private: bool,
        recovered: threading.Event,
    ) -> None:
        self.config = config
        self.sandboxes = sandboxes
        self.containers = containers
        self.private = private
        """Serving the private socket: only private pods exist here; else only the others."""
        self.recovered = recovered
        self.pod_cidr = ""

    def reconfigure(self, config: Config) -> None:
        self.config = config

    # --- this socket's own pods -------------------------------------------------------------------------------

    def _mine(self, record: SandboxRecord | ContainerRecord) -> bool:
        return record.private == self.private

    def _sandbox(self, sandbox_id: str) -> SandboxRecord:
        return self.sandboxes.records.get(sandbox_id, self._mine)

    def _container(self, container_id: str) -> ContainerRecord:
        return self.containers.get(self.containers.records.get(container_id, self._mine).id)

    def _runtime_problem(self) -> tuple[str, str] | None:
        """(reason, message) for why hulld cannot run pods now, or None."""
        if not self.recovered.is_set():
            return "Recovering", "hulld is recovering its state after a start"
        default = self.config.runtime.default_handler
        path = self.config.handlers[default].runtime_path
        if not (path.is_file() and os.access(path, os.X_OK)):
            return "DefaultHandlerMissing", f"the default handler {default}'s runtime {path} is not an executable"
        for directory in (self.config.storage.root, self.config.storage.state):
            if not os.access(directory, os.W_OK):
                return "StateNotWritable", f"{directory} is not writable"
        return None

    # --- runtime ----------------------------------------------------------------------------------------------

    def Version(self, request: Any, context: Any) -> Any:  # noqa: N802 - the CRI's method names
        return cri.VersionResponse(
            version=CRI_VERSION, runtime_name="hulld", runtime_version=__version__, runtime_api_version="v1"
        )

    def Status(self, request: Any, context: Any) -> Any:  # noqa: N802
        network_problem = cni.readiness_problem(self.config.network)
        runtime_problem = self._runtime_problem()
        reason, message = runtime_problem or ("", "")
        conditions = [
            cri.RuntimeCondition(type="RuntimeReady", status=runtime_problem is None, reason=reason, message=message),
            cri.RuntimeCondition(
                type="NetworkReady",
                status=network_problem is None,
                reason="" if network_problem is None else "NetworkPluginNotReady",
                message=network_problem or "",
            ),
        ]
        handlers = [cri.RuntimeHandler(name="", features=cri.RuntimeHandlerFeatures())]
        handlers += [
            cri.RuntimeHandler(name=name, features=cri.RuntimeHandlerFeatures())
            for name in sorted(self.config.handlers)
        ]
        return cri.StatusResponse(status=cri.RuntimeStatus(conditions=conditions), runtime_handlers=handlers)

    def RuntimeConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        return cri.RuntimeConfigResponse(linux=cri.LinuxRuntimeConfiguration(cgroup_driver=cri.CGROUPFS))

    def UpdateRuntimeConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.pod_cidr = request.runtime_config.network_config.pod_cidr
        return cri.UpdateRuntimeConfigResponse()

    # --- sandboxes --------------------------------------------------------------------------------------------

    def RunPodSandbox(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.containers.handler(self.sandboxes.handler(request.runtime_handler))  # refuses unusable handlers
        record = self.sandboxes.run(as_dict(request.config), request.runtime_handler, private=self.private)
        return cri.RunPodSandboxResponse(pod_sandbox_id=record.id)

    def StopPodSandbox(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self.sandboxes.records.find(request.pod_sandbox_id, self._mine)
        if record is not None:
            for container in self.containers.in_sandbox(record.id):
                self.containers.stop(container.id, 0)
            self.sandboxes.stop(record.id)
        return cri.StopPodSandboxResponse()

    def RemovePodSandbox(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self.sandboxes.records.find(request.pod_sandbox_id, self._mine)
        if record is not None:
            for container in self.containers.in_sandbox(record.id):
                self.containers.remove(container.id)
            self.sandboxes.remove(record.id)
        return cri.RemovePodSandboxResponse()

    def PodSandboxStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self._sandbox(request.pod_sandbox_id)
        mode = {True: cri.NODE, False: cri.POD}
        status = cri.PodSandboxStatus(
            id=record.id,
            metadata=cri.PodSandboxMetadata(**record.metadata),
            state=SANDBOX_STATES[record.state],
            created_at=record.created_at,
            network=cri.PodSandboxNetworkStatus(
                ip=record.ip, additional_ips=[cri.PodIP(ip=ip) for ip in record.additional_ips]
            ),
            linux=cri.LinuxPodSandboxStatus(
                namespaces=cri.Namespace(
                    options=cri.NamespaceOption(
                        network=mode[record.host_network],
                        ipc=mode[record.host_ipc],
                        pid=cri.NODE if record.host_pid else cri.CONTAINER,
                    )
                )
            ),
            labels=record.labels,
            annotations=record.annotations,
            runtime_handler=record.handler,
        )
        info = (
            {"info": json.dumps({"namespaces": record.namespaces, "hostname": record.hostname})}
            if request.verbose
            else {}
        )
        return cri.PodSandboxStatusResponse(status=status, info=info, timestamp=time.time_ns())

    def ListPodSandbox(self, request: Any, context: Any) -> Any:  # noqa: N802
        records = self._sandboxes(request.filter, by_state=True)
        return cri.ListPodSandboxResponse(items=[sandbox_message(record) for record in records])

    # --- containers -------------------------------------------------------------------------------------------

    def CreateContainer(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self.containers.create(self._sandbox(request.pod_sandbox_id).id, as_dict(request.config))
        return cri.CreateContainerResponse(container_id=record.id)

    def StartContainer(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.containers.start(self._container(request.container_id).id)
        return cri.StartContainerResponse()

    def StopContainer(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self.containers.records.find(request.container_id, self._mine)
        if record is not None:  # CRI: stopping an unknown container succeeds
            self.containers.stop(record.id, float(request.timeout))
        return cri.StopContainerResponse()

    def RemoveContainer(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self.containers.records.find(request.container_id, self._mine)
        if record is not None:  # CRI: removing an unknown container succeeds
            self.containers.remove(record.id)
        return cri.RemoveContainerResponse()

    def ContainerStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self._container(request.container_id)
        status = container_status(record)
        info = {"info": json.dumps({"pid": record.pid, "sandboxID": record.sandbox_id})} if request.verbose else {}
        return cri.ContainerStatusResponse(status=status, info=info)

    def _containers(self, wanted: Any, *, by_state: bool) -> list[ContainerRecord]:
        """The containers a ContainerFilter (or ContainerStatsFilter, which has no state) selects."""
        return [
            record
            for record in self.containers.all()
            if self._mine(record)
            and (not wanted.id or record.id.startswith(wanted.id))
            and (not wanted.pod_sandbox_id or record.sandbox_id.startswith(wanted.pod_sandbox_id))
            and (not by_state or not wanted.HasField("state") or CONTAINER_STATES[record.state] == wanted.state.state)
            and _labels_match(record.labels, wanted.label_selector)
        ]

    def _sandboxes(self, wanted: Any, *, by_state: bool) -> list[SandboxRecord]:
        """The sandboxes a PodSandboxFilter (or PodSandboxStatsFilter, which has no state) selects."""
        return [
            record
            for record in self.sandboxes.all()
            if self._mine(record)
            and (not wanted.id or record.id.startswith(wanted.id))
            and (not by_state or not wanted.HasField("state") or SANDBOX_STATES[record.state] == wanted.state.state)
            and _labels_match(record.labels, wanted.label_selector)
        ]

    def ListContainers(self, request: Any, context: Any) -> Any:  # noqa: N802
        records = self._containers(request.filter, by_state=True)
        return cri.ListContainersResponse(containers=[container_message(record) for record in records])

    def ExecSync(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self._container(request.container_id)
        result = self.containers.exec_sync(record.id, list(request.cmd), float(request.timeout))
        return cri.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    def ReopenContainerLog(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.containers.reopen_log(self._container(request.container_id).id)
        return cri.ReopenContainerLogResponse()

    def UpdateContainerResources(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.containers.update_resources(self._container(request.container_id).id, as_dict(request.linux))
        return cri.UpdateContainerResourcesResponse()

    def GetContainerEvents(self, request: Any, context: Any) -> Any:  # noqa: N802
        kinds = {
            "CREATED": cri.CONTAINER_CREATED_EVENT,
            "STARTED": cri.CONTAINER_STARTED_EVENT,
            "STOPPED": cri.CONTAINER_STOPPED_EVENT,
            "DELETED": cri.CONTAINER_DELETED_EVENT,
        }
        with self.containers.events.subscribe() as mailbox:
            while context.is_active():
                try:
                    event = mailbox.get(timeout=1)
                except queue.Empty:
                    continue
                record = event.record
                if not self._mine(record):
                    continue
                sandbox = self.sandboxes.records.find(record.sandbox_id)
                pod = cri.PodSandboxStatus(id=record.sandbox_id, state=cri.SANDBOX_NOTREADY)
                if sandbox is not None:
                    pod = cri.PodSandboxStatus(
                        id=sandbox.id,
                        state=SANDBOX_STATES[sandbox.state],
                        metadata=cri.PodSandboxMetadata(**sandbox.metadata),
                    )
                status = container_status(record)
                yield cri.ContainerEventResponse(
                    container_id=record.id,
                    container_event_type=kinds[event.kind],
                    created_at=event.at,
                    pod_sandbox_status=pod,
                    containers_statuses=[status],
                )

    # --- stats ------------------------------------------------------------------------------------------------

    def _stats(self, record: ContainerRecord) -> Any:
        usage, used, inodes = self.containers.usage(record)
        now = time.time_ns()
        stats = cri.ContainerStats(
            attributes=cri.ContainerAttributes(
                id=record.id,
                metadata=cri.ContainerMetadata(**record.metadata),
                labels=record.labels,
                annotations=record.annotations,
            ),
            writable_layer=cri.FilesystemUsage(
                timestamp=now,
                fs_id=cri.FilesystemIdentifier(mountpoint=str(self.containers.files)),
                used_bytes=cri.UInt64Value(value=used),
                inodes_used=cri.UInt64Value(value=inodes),
            ),
        )
        if usage.cpu_nanoseconds is not None:
            stats.cpu.timestamp = now
            stats.cpu.usage_core_nano_seconds.value = usage.cpu_nanoseconds
        if usage.memory_working_set is not None:
            stats.memory.timestamp = now
            stats.memory.working_set_bytes.value = usage.memory_working_set
            stats.memory.usage_bytes.value = usage.memory_usage or 0
            stats.memory.rss_bytes.value = usage.memory_rss or 0
        return stats

    def ContainerStats(self, request: Any, context: Any) -> Any:  # noqa: N802
        return cri.ContainerStatsResponse(stats=self._stats(self._container(request.container_id)))

    def ListContainerStats(self, request: Any, context: Any) -> Any:  # noqa: N802
        records = self._containers(request.filter, by_state=False)
        return cri.ListContainerStatsResponse(stats=[self._stats(record) for record in records])

    def _sandbox_stats(self, record: SandboxRecord) -> Any:
        containers = [
            self._stats(container) for container in self.containers.all() if container.sandbox_id == record.id
        ]
        stats = cri.PodSandboxStats(
            attributes=cri.PodSandboxAttributes(
                id=record.id,
                metadata=cri.PodSandboxMetadata(**record.metadata),
                labels=record.labels,
                annotations=record.annotations,
            )
        )
        now = time.time_ns()
        stats.linux.cpu.timestamp = now
        stats.linux.cpu.usage_core_nano_seconds.value = sum(c.cpu.usage_core_nano_seconds.value for c in containers)
        stats.linux.memory.timestamp = now
        stats.linux.memory.working_set_bytes.value = sum(c.memory.working_set_bytes.value for c in containers)
        stats.linux.containers.extend(containers)
        return stats

    def PodSandboxStats(self, request: Any, context: Any) -> Any:  # noqa: N802
        return cri.PodSandboxStatsResponse(stats=self._sandbox_stats(self._sandbox(request.pod_sandbox_id)))

    def ListPodSandboxStats(self, request: Any, context: Any) -> Any:  # noqa: N802
        records = self._sandboxes(request.filter, by_state=False)
        return cri.ListPodSandboxStatsResponse(stats=[self._sandbox_stats(record) for record in records])


def _unimplemented(message: str) -> Any:
    def method(self: RuntimeServicer, request: Any, context: Any) -> Any:
        raise errors.Unimplemented(message)

    return method


for _name in NOT_YET:
    setattr(RuntimeServicer, _name, _unimplemented(f"hulld {__version__} does not implement {_name} yet"))
for _name in STREAMING:
    message = f"{_name}: streaming (Exec, Attach, PortForward) is not supported yet; ExecSync is"
    setattr(RuntimeServicer, _name, _unimplemented(message))
for _name, _reason in UNSUPPORTED.items():
    setattr(RuntimeServicer, _name, _unimplemented(f"{_name}: {_reason}"))
