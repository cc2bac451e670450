"""Checks that a handler really works: its binary, then a real probe container run under it through the node's
CRI runtime (hulld, or containerd).

The probe is a pod and a container from a small image (the agent's --probe-image, pulled from the registry
the node is configured with) whose command exits 0; the handler is ready only if that container ran and
exited 0. On hulld, probes go through its private socket, so the kubelet never sees them (it stops pods it
does not know). containerd has no such view: probes go through its CRI socket, the kubelet's own, where its
housekeeping may stop one (the agent then probes once more). Everything the probe makes is removed
afterwards, whatever happened; what an agent killed mid-probe left, the next agent removes when it starts.

Probe containers on containerd log to a file of their own (under ``log_root``): the kubelet removes the exited
containers of pods it does not know, and first deletes what matches ``<the container's log path>*`` — with no
log path, every file, link and empty directory in its working directory, the node's root (/bin, /sbin on a
merged-/usr system).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc

from kubehull_agent.host import Host
from kubehull_api.noderuntime import HandlerConfig

PROBE_TIMEOUT = 60.0
PROBE_PREFIX = "kubehull-probe-"
PROBE_SLICE = "kubehull-probes.slice"
"""The cgroup parent of probe pods on a runtime in systemd's cgroups that needs one, as the kubelet gives each pod
its slice: containerd (with ``SystemdCgroup``) has none of its own; hulld makes one per pod."""


@dataclasses.dataclass(frozen=True)
class Result:
    ready: bool
    reason: str
    message: str
    duration: float
    binary_version: str = ""


class Prober:
    def __init__(
        self, private_socket: Path, image: str, host: Host, log_root: Path | None = None, systemd_parent: str = ""
    ) -> None:
        """``log_root``: the host directory under which each probe pod has its log directory (named after the pod),
        for a runtime the kubelet shares (hulld's private socket needs none); ``systemd_parent``: the probe pods'
        cgroup parent when the runtime reports systemd's cgroup driver."""
        channel = grpc.insecure_channel(f"unix://{private_socket}")
        self.runtime: Any = api_pb2_grpc.RuntimeServiceStub(channel)
        self.images: Any = api_pb2_grpc.ImageServiceStub(channel)
        self.image = image
        self.host = host
        self.systemd_parent = systemd_parent
        self.log_root = log_root

    def binary_problem(self, handler: HandlerConfig) -> str | None:
        return self.path_problem(handler.path)

    def path_problem(self, binary: str) -> str | None:
        """Why the host's ``binary`` cannot be run, if it cannot."""
        path = self.host.path(binary)
        if not path.is_file():
            return f"{binary} does not exist on this node"
        if not path.stat().st_mode & 0o111:
            return f"{binary} is not executable"
        return None

    def binary_version(self, handler: HandlerConfig) -> str:
        flag = "-v" if handler.runtime_type.value == "vm" else "--version"
        command = self.host.command([handler.path, flag])
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return ""
        lines = (result.stdout or result.stderr).strip().splitlines()
        return lines[0][:200] if lines else ""

    def runtime_status(self) -> tuple[bool, str, set[str]]:
        """(ready, version, handler names) as hulld reports them."""
        version = self.runtime.Version(cri.VersionRequest(), timeout=5).runtime_version
        status = self.runtime.Status(cri.StatusRequest(), timeout=5)
        ready = any(c.type == "RuntimeReady" and c.status for c in status.status.conditions)
        return ready, version, {handler.name for handler in status.runtime_handlers if handler.name}

    def runtime_name(self) -> str:
        name: str = self.runtime.Version(cri.VersionRequest(), timeout=5).runtime_name
        return name

    def systemd_cgroup(self, default: bool) -> bool | None:
        """Whether the runtime's containers are in systemd's cgroups, as its RuntimeConfig says (the kubelet's
        driver follows it); ``default`` if it does not say (an older runtime); None if it does not answer."""
        try:
            answer = self.runtime.RuntimeConfig(cri.RuntimeConfigRequest(), timeout=5)
        except grpc.RpcError as error:
            return default if error.code() == grpc.StatusCode.UNIMPLEMENTED else None
        if not answer.HasField("linux"):
            return default
        return bool(answer.linux.cgroup_driver == cri.SYSTEMD)

    def remove_leftovers(self) -> int:
        """Remove the probe pods an earlier agent left (killed in the middle of a probe); how many. The private
        socket shows only the agent's own pods."""
        listed = self.runtime.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=10).items
        leftovers = [pod for pod in listed if pod.metadata.name.startswith(PROBE_PREFIX)]
        for pod in leftovers:
            self.runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
            self.runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
            if self.log_root is not None:
                shutil.rmtree(self.host.path(self.log_root / pod.metadata.name), ignore_errors=True)
        return len(leftovers)

    def probe(self, handler: HandlerConfig) -> Result:
        started = time.monotonic()
        problem = self.binary_problem(handler)
        if problem is not None:
            return Result(False, "BinaryNotFound", problem, 0.0)
        version = self.binary_version(handler)
        name = f"{PROBE_PREFIX}{handler.name}-{uuid.uuid4().hex[:8]}"
        parent = self.systemd_parent if self.systemd_parent and self.systemd_cgroup(default=False) else ""
        logs = None if self.log_root is None else self.log_root / name
        if logs is not None:
            self.host.path(logs).mkdir(parents=True, exist_ok=True)
        config = cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, namespace="kubehull-system", uid=name),
            hostname=name,
            log_directory="" if logs is None else str(logs),
            linux=cri.LinuxPodSandboxConfig(cgroup_parent=parent),
        )
        pod = ""
        try:
            self.images.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=self.image)), timeout=120)
            pod = self.runtime.RunPodSandbox(
                cri.RunPodSandboxRequest(config=config, runtime_handler=handler.name), timeout=120
            ).pod_sandbox_id
            container = self.runtime.CreateContainer(
                cri.CreateContainerRequest(
                    pod_sandbox_id=pod,
                    sandbox_config=config,
                    config=cri.ContainerConfig(
                        metadata=cri.ContainerMetadata(name="probe"),
                        image=cri.ImageSpec(image=self.image),
                        command=["true"],
                        log_path="" if logs is None else "probe.log",
                    ),
                ),
                timeout=120,
            ).container_id
            self.runtime.StartContainer(cri.StartContainerRequest(container_id=container), timeout=120)
            deadline = time.monotonic() + PROBE_TIMEOUT
            while True:
                status = self.runtime.ContainerStatus(
                    cri.ContainerStatusRequest(container_id=container), timeout=10
                ).status
                if status.state == cri.CONTAINER_EXITED:
                    break
                if time.monotonic() > deadline:
                    return Result(
                        False,
                        "ProbeTimedOut",
                        f"the probe container did not finish in {PROBE_TIMEOUT:.0f}s",
                        time.monotonic() - started,
                        version,
                    )
                time.sleep(0.05)
            if status.exit_code != 0:
                return Result(
                    False,
                    "ProbeFailed",
                    f"the probe container exited with {status.exit_code}",
                    time.monotonic() - started,
                    version,
                )
            return Result(True, "", "", time.monotonic() - started, version)
        except grpc.RpcError as error:
            return Result(
                False,
                "ProbeFailed",
                f"{error.code().name}: {error.details()}"[:4000],
                time.monotonic() - started,
                version,
            )
        finally:
            if pod:
                try:
                    self.runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
                    self.runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
                except grpc.RpcError:
                    pass
            if logs is not None:
                shutil.rmtree(self.host.path(logs), ignore_errors=True)
