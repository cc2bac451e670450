"""CRI RuntimeService: one thin method per RPC.

This release answers Version, Status, RuntimeConfig and UpdateRuntimeConfig; pod sandboxes and containers
are not implemented yet and say so with UNIMPLEMENTED (docs/hulld.md lists what is supported).
"""

from __future__ import annotations

from typing import Any

from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc

from hulld import __version__, errors
from hulld.config import Config
from hulld.node import cni

CRI_VERSION = "0.1.0"
NOT_YET = (
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "ContainerStats",
    "ListContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "GetContainerEvents",
    "UpdatePodSandboxResources",
)
STREAMING = ("Exec", "Attach", "PortForward")
UNSUPPORTED = {
    "CheckpointContainer": "hulld does not support container checkpoints",
    "ListMetricDescriptors": "hulld does not serve CRI metrics; the kubelet uses cAdvisor",
    "ListPodSandboxMetrics": "hulld does not serve CRI metrics; the kubelet uses cAdvisor",
}


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.pod_cidr = ""

    def reconfigure(self, config: Config) -> None:
        self.config = config

    def Version(self, request: Any, context: Any) -> Any:  # noqa: N802 - the CRI's method names
        return cri.VersionResponse(
            version=CRI_VERSION, runtime_name="hulld", runtime_version=__version__, runtime_api_version="v1"
        )

    def Status(self, request: Any, context: Any) -> Any:  # noqa: N802
        network_problem = cni.readiness_problem(self.config.network)
        conditions = [
            cri.RuntimeCondition(type="RuntimeReady", status=True),
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


def _not_yet(operation: str) -> Any:
    def method(self: RuntimeServicer, request: Any, context: Any) -> Any:
        raise errors.Unimplemented(f"hulld {__version__} does not implement {operation} yet")

    return method


def _streaming(operation: str) -> Any:
    def method(self: RuntimeServicer, request: Any, context: Any) -> Any:
        raise errors.Unimplemented(
            f"{operation}: streaming (Exec, Attach, PortForward) is not supported yet; ExecSync is"
        )

    return method


def _unsupported(operation: str, message: str) -> Any:
    def method(self: RuntimeServicer, request: Any, context: Any) -> Any:
        raise errors.Unimplemented(f"{operation}: {message}")

    return method


for _name in NOT_YET:
    setattr(RuntimeServicer, _name, _not_yet(_name))
for _name in STREAMING:
    setattr(RuntimeServicer, _name, _streaming(_name))
for _name, _message in UNSUPPORTED.items():
    setattr(RuntimeServicer, _name, _unsupported(_name, _message))
