"""CRI runtime information: Version, Status (RuntimeReady with a reason, NetworkReady, the handlers),
RuntimeConfig and UpdateRuntimeConfig."""

from __future__ import annotations

import os
from typing import Any

from cri_api.v1 import api_pb2 as cri

from hulld import __version__
from hulld.cri.scope import Scope
from hulld.node import cni

CRI_VERSION = "0.1.0"


class RuntimeInfoMethods(Scope):
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

    def Version(self, request: Any, context: Any) -> Any:  # noqa: N802
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
        # The kubelet takes its cgroup driver from this answer (KubeletCgroupDriverFromCRI): it must be ours.
        driver = cri.SYSTEMD if self.config.runtime.cgroup_driver == "systemd" else cri.CGROUPFS
        return cri.RuntimeConfigResponse(linux=cri.LinuxRuntimeConfiguration(cgroup_driver=driver))

    def UpdateRuntimeConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.pod_cidr = request.runtime_config.network_config.pod_cidr
        return cri.UpdateRuntimeConfigResponse()
