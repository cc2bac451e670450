"""CRI pod sandbox methods: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox,
UpdatePodSandboxResources."""

from __future__ import annotations

import json
import time
from typing import Any

from cri_api.v1 import api_pb2 as cri

from hulld.cri import convert
from hulld.cri.scope import Scope


class SandboxMethods(Scope):
    def RunPodSandbox(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self.sandboxes.run(convert.as_dict(request.config), request.runtime_handler, private=self.private)
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
            state=convert.SANDBOX_STATES[record.status.state],
            created_at=record.created_at,
            network=cri.PodSandboxNetworkStatus(
                ip=record.status.ip, additional_ips=[cri.PodIP(ip=ip) for ip in record.status.additional_ips]
            ),
            linux=cri.LinuxPodSandboxStatus(
                namespaces=cri.Namespace(
                    options=cri.NamespaceOption(
                        network=mode[record.host_network],
                        ipc=mode[record.host_ipc],
                        pid=cri.NODE if record.host_pid else cri.POD if record.shared_pid else cri.CONTAINER,
                    )
                )
            ),
            labels=record.labels,
            annotations=record.annotations,
            runtime_handler=record.handler,
        )
        info = (
            {
                "info": json.dumps(
                    {
                        "namespaces": record.status.namespaces,
                        "hostname": record.hostname,
                        "infra": record.status.infra_id,
                    }
                )
            }
            if request.verbose
            else {}
        )
        return cri.PodSandboxStatusResponse(status=status, info=info, timestamp=time.time_ns())

    def ListPodSandbox(self, request: Any, context: Any) -> Any:  # noqa: N802
        records = self._sandboxes(request.filter, by_state=True)
        return cri.ListPodSandboxResponse(items=[convert.sandbox_message(record) for record in records])

    def UpdatePodSandboxResources(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.sandboxes.update_resources(
            self._sandbox(request.pod_sandbox_id),
            resources=convert.as_dict(request.resources),
            overhead=convert.as_dict(request.overhead),
        )
        return cri.UpdatePodSandboxResourcesResponse()
