"""CRI RuntimeService: the servicer the gRPC server registers for one socket, composed of one class per
method group, each in its own module and each as thin as the CRI allows (translate the request, call the
domain, build the answer):

    scope         the domain it calls and the socket's own pods (kubelet's or private), list filters
    runtime_info  Version, Status, RuntimeConfig, UpdateRuntimeConfig
    sandbox       RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox,
                  UpdatePodSandboxResources
    container     CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus,
                  ListContainers, ExecSync, ReopenContainerLog, UpdateContainerResources
    events        GetContainerEvents
    streaming     Exec, Attach, PortForward (URLs on hulld's streaming server)
    stats         ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats
    metrics       ListMetricDescriptors, ListPodSandboxMetrics (cAdvisor's container metrics)
    unsupported   UNIMPLEMENTED with the reason (checkpoints)
    convert       records to CRI messages and back
"""

from __future__ import annotations

from cri_api.v1 import api_pb2_grpc

from hulld.cri.container import ContainerMethods
from hulld.cri.events import EventMethods
from hulld.cri.metrics import MetricsMethods
from hulld.cri.runtime_info import RuntimeInfoMethods
from hulld.cri.sandbox import SandboxMethods
from hulld.cri.stats import StatsMethods
from hulld.cri.streaming import StreamingMethods
from hulld.cri.unsupported import UnsupportedMethods


class RuntimeServicer(
    RuntimeInfoMethods,
    SandboxMethods,
    ContainerMethods,
    EventMethods,
    StatsMethods,
    MetricsMethods,
    StreamingMethods,
    UnsupportedMethods,
    api_pb2_grpc.RuntimeServiceServicer,
):
    """Every RuntimeService method; the generated base answers UNIMPLEMENTED for any the CRI adds later."""
