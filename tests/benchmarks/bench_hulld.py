"""hulld vs containerd: pod start latency, teardown, and memory at 50 pods; prints figures side by side.

    .venv/bin/python tests/benchmarks/bench_hulld.py [--pods 20] [--parallel 10] [--memory-pods 50]

Both runtimes run in the same way on the same machine, one after the other: the same runc binary, the same CNI
configuration (a bridge with host-local IPAM, Debian's plugins), the same busybox image from the same local
registry, containerd with restrict_oom_score_adj as this machine requires. Pod start is RunPodSandbox +
CreateContainer + StartContainer, measured by a CRI client; teardown is StopContainer + RemoveContainer +
StopPodSandbox + RemovePodSandbox. Memory is PSS (/proc/<pid>/smaps_rollup) of the runtime and its per-pod
helpers (hulld and its conmon monitors; containerd and its shims), containers' own processes excluded.
Target (issue #4): hulld's start p50 at most 0.6 x containerd's; its memory at most half.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "e2e"))

from kubehull_harness import images, processes, registry  # noqa: E402

RUNC = "/usr/sbin/runc"
CNI = {
    "cniVersion": "0.4.0",
    "name": "bench",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "hullbench0",
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.232.0.0/16"}]],
                "dataDir": "/run/hull-bench-ipam",
            },
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


class Runtime:
    def __init__(self, name: str, socket: Path, process: processes.ManagedProcess, helper_names: tuple[str, ...]):
        self.name = name
        self.socket = socket
        self.process = process
        self.helper_names = helper_names
        channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime: Any = api_pb2_grpc.RuntimeServiceStub(channel)
        self.images: Any = api_pb2_grpc.ImageServiceStub(channel)

    def memory(self) -> tuple[float, int]:
        """PSS in MiB of the runtime process and its helpers, and how many helpers."""
        pids = [self.process.popen.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "comm").read_text().strip() in self.helper_names:
                        pids.append(int(entry.name))
                except OSError:
                    continue
        total = 0
        for pid in pids:
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            total += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
        return total / 1024, len(pids) - 1


def wait_socket(process: processes.ManagedProcess, socket: Path) -> None:
    def answers() -> bool:
        stub = api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel(f"unix://{socket}"))
        stub.Version(cri.VersionRequest(), timeout=2)
        return True

    process.wait_ready(answers, 60, "answering CRI Version")


@contextmanager
def hulld(work: Path, registry_host: str, cni_dir: Path) -> Iterator[Runtime]:
    config = work / "hulld.toml"
    config.write_text(f"""
[server]
socket = "{work}/hulld.sock"
metrics_address = ""
[storage]
root = "{work}/root"
state = "{work}/state"
pod_log_root = "{work}/pod-logs"
[network]
cni_conf_dir = "{cni_dir}"
cni_bin_dirs = ["/usr/lib/cni"]
[[registries]]
prefix = "{registry_host}"
insecure = true
[handlers.runc]
runtime_path = "{RUNC}"
""")
    process = processes.ManagedProcess("hulld", [sys.executable, "-m", "hulld", "--config", config], work / "logs")
    wait_socket(process, work / "hulld.sock")
    try:
        yield Runtime("hulld", work / "hulld.sock", process, ("conmon",))
    finally:
        process.stop()


@contextmanager
def containerd(work: Path, registry_host: str, cni_dir: Path) -> Iterator[Runtime]:
    cri_plugin = 'plugins."io.containerd.grpc.v1.cri"'
    config = work / "containerd.toml"
    config.write_text(f"""
version = 2
root = "{work}/root"
state = "{work}/state"
[grpc]
  address = "{work}/containerd.sock"
[{cri_plugin}]
  sandbox_image = "{registry_host}/pause:3.9"
  restrict_oom_score_adj = true
  [{cri_plugin}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_dir}"
  [{cri_plugin}.containerd]
    default_runtime_name = "runc"
    [{cri_plugin}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri_plugin}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
  [{cri_plugin}.registry.mirrors."{registry_host}"]
    endpoint = ["http://{registry_host}"]
""")
    process = processes.ManagedProcess("containerd", ["containerd", "--config", config], work / "logs")
    wait_socket(process, work / "containerd.sock")
    try:
        yield Runtime("containerd", work / "containerd.sock", process, ("containerd-shim", "containerd-shim-runc-v2"))
    finally:
        process.stop()


# As the kubelet asks for an ordinary pod: a PID namespace per container (the CRI's default, POD, is what
# shareProcessNamespace asks for, and costs hulld an infra container; containerd runs one for every pod).
KUBELET_NAMESPACES = cri.NamespaceOption(pid=cri.CONTAINER)


def start_pod(runtime: Runtime, name: str, image: str, logs: Path) -> tuple[str, str, float]:
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace="bench", uid=name),
        hostname=name,
        log_directory=str(logs / name),
        linux=cri.LinuxPodSandboxConfig(
            security_context=cri.LinuxSandboxSecurityContext(namespace_options=KUBELET_NAMESPACES)
        ),
    )
    started = time.perf_counter()
    pod = runtime.runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
    container = runtime.runtime.CreateContainer(
        cri.CreateContainerRequest(
            pod_sandbox_id=pod,
            sandbox_config=config,
            config=cri.ContainerConfig(
                metadata=cri.ContainerMetadata(name="main"),
                image=cri.ImageSpec(image=image),
                command=["sleep", "3600"],
                log_path="main.log",
                linux=cri.LinuxContainerConfig(
                    security_context=cri.LinuxContainerSecurityContext(namespace_options=KUBELET_NAMESPACES)
                ),
            ),
        ),
        timeout=120,
    ).container_id
    runtime.runtime.StartContainer(cri.StartContainerRequest(container_id=container), timeout=120)
    return pod, container, time.perf_counter() - started


def stop_pod(runtime: Runtime, pod: str, container: str) -> float:
    started = time.perf_counter()
    runtime.runtime.StopContainer(cri.StopContainerRequest(container_id=container, timeout=0), timeout=120)
    runtime.runtime.RemoveContainer(cri.RemoveContainerRequest(container_id=container), timeout=120)
    runtime.runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=120)
    runtime.runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=120)
    return time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(runtime: Runtime, image: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    runtime.images.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=image)), timeout=300)
    for index in range(2):  # warm caches and lazily set-up state (bridge, cgroups, pause image)
        stop_pod(runtime, *start_pod(runtime, f"warm-{index}", image, logs)[:2])
    sequential, teardown = [], []
    for index in range(args.pods):
        pod, container, elapsed = start_pod(runtime, f"seq-{index}", image, logs)
        sequential.append(elapsed)
        teardown.append(stop_pod(runtime, pod, container))
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        begun = time.perf_counter()
        started = list(pool.map(lambda i: start_pod(runtime, f"par-{i}", image, logs), range(args.parallel * 2)))
        parallel_wall = time.perf_counter() - begun
        list(pool.map(lambda item: stop_pod(runtime, item[0], item[1]), started))
    parallel = [elapsed for _, _, elapsed in started]
    running = [start_pod(runtime, f"mem-{index}", image, logs) for index in range(args.memory_pods)]
    time.sleep(2)
    memory, helpers = runtime.memory()
    for pod, container, _ in running:
        stop_pod(runtime, pod, container)
    return {
        "start p50": statistics.median(sequential),
        "start p90": percentile(sequential, 0.9),
        "parallel p50": statistics.median(parallel),
        "parallel p90": percentile(parallel, 0.9),
        "parallel wall": parallel_wall,
        "teardown p50": statistics.median(teardown),
        "memory": memory,
        "helpers": helpers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=20, help="sequential pods")
    parser.add_argument("--parallel", type=int, default=10, help="concurrent clients (2 pods each)")
    parser.add_argument("--memory-pods", type=int, default=50)
    args = parser.parse_args()
    if shutil.which("containerd") is None:
        print("containerd is not installed (Debian package containerd)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="hulld-bench-"))
    served = registry.start(work / "registry", work / "logs")
    results: dict[str, dict[str, Any]] = {}
    try:
        pushed = images.preload(served, work / "images")
        pause = images.ImageSpec(repository="pause", tag="3.9", cmd=("sleep", "2147483647"))
        images.push(images.build(pause, work / "images" / "layout", work / "images"), pause, served, work / "images")
        image = pushed["busybox"].reference
        cni_dir = work / "cni"
        cni_dir.mkdir()
        (cni_dir / "10-bench.conflist").write_text(json.dumps(CNI))
        runtimes: list[tuple[str, Callable[..., Any]]] = [("containerd", containerd), ("hulld", hulld)]
        for name, launch in runtimes:
            (work / name).mkdir()
            with launch(work / name, served.host, cni_dir) as runtime:
                print(f"measuring {name}...", flush=True)
                results[name] = measure(runtime, image, args, work / name / "pod-logs")
    finally:
        served.stop()
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            if str(work) in line.split()[4]:
                processes.run(["umount", "--lazy", line.split()[4]], timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    hull, peer = results["hulld"], results["containerd"]
    print(f"\n{'':<36}{'hulld':>12}{'containerd':>12}{'ratio':>8}")
    for key, unit in (
        ("start p50", "ms"),
        ("start p90", "ms"),
        ("parallel p50", "ms"),
        ("parallel p90", "ms"),
        ("parallel wall", "ms"),
        ("teardown p50", "ms"),
    ):
        label = f"{key} ({args.parallel * 2} pods, {args.parallel} clients)" if key.startswith("parallel") else key
        print(f"{label:<36}{hull[key] * 1000:>10.0f}{unit}{peer[key] * 1000:>10.0f}{unit}{hull[key] / peer[key]:>8.2f}")
    memory_label = f"PSS at {args.memory_pods} pods"
    print(
        f"{memory_label:<36}{hull['memory']:>9.0f}MiB{peer['memory']:>9.0f}MiB{hull['memory'] / peer['memory']:>8.2f}"
    )
    print(f"{'(helper processes)':<36}{hull['helpers']:>12}{peer['helpers']:>12}")
    print("targets: start p50 ratio <= 0.60; memory ratio <= 0.50")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO / "node-agent"))
    sys.exit(main())
