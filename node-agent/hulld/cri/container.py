"""CRI container methods: CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus,
ListContainers, ExecSync, ReopenContainerLog, UpdateContainerResources."""

from __future__ import annotations

import json
from typing import Any

from cri_api.v1 import api_pb2 as cri

from hulld.cri import convert
from hulld.cri.scope import Scope


class ContainerMethods(Scope):
    def CreateContainer(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self.containers.create(self._sandbox(request.pod_sandbox_id).id, convert.as_dict(request.config))
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
        status = convert.container_status(record)
        info = (
            {"info": json.dumps({"pid": record.status.pid, "sandboxID": record.sandbox_id})} if request.verbose else {}
        )
        return cri.ContainerStatusResponse(status=status, info=info)

    def ListContainers(self, request: Any, context: Any) -> Any:  # noqa: N802
        records = self._containers(request.filter, by_state=True)
        return cri.ListContainersResponse(containers=[convert.container_message(record) for record in records])

    def ExecSync(self, request: Any, context: Any) -> Any:  # noqa: N802
        record = self._container(request.container_id)
        result = self.containers.exec_sync(record.id, list(request.cmd), float(request.timeout))
        return cri.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    def ReopenContainerLog(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.containers.reopen_log(self._container(request.container_id).id)
        return cri.ReopenContainerLogResponse()

    def UpdateContainerResources(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.containers.update_resources(self._container(request.container_id).id, convert.as_dict(request.linux))
        return cri.UpdateContainerResourcesResponse()
