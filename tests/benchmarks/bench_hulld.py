"""hulld vs containerd: pod start latency, teardown, and memory at 50 pods; prints figures side by side.

    .venv/bin/python tests/benchmarks/bench_hulld.py [--pods 20] [--parallel 10] [--memory-pods 50] [--only ...]
                                                     [--breakdown]

Columns, each a runtime and one of its handlers, measured one after the other on the same machine:
hulld with runc and runsc (OCI handlers, under conmon) and with containerd's runc shim (a shim v2 handler);
containerd 2.4 (the toolchain's build) with runc and with gVisor's runsc shim; Debian's containerd 1.6 with
runc. The same runc and runsc binaries, the same CNI configuration (a bridge with host-local IPAM, Debian's
plugins), the same busybox image from the same local registry; containerd with restrict_oom_score_adj, as this
machine requires, and gVisor's shim started by kubehull_harness/shim_start.py (see there) for both.

Pod start is RunPodSandbox + CreateContainer + StartContainer, measured by a CRI client asking as the kubelet
asks (a PID namespace per container, a log directory per pod); teardown is StopContainer + RemoveContainer +
StopPodSandbox + RemovePodSandbox. Memory is PSS and USS (/proc/<pid>/smaps_rollup) of the runtime and its own
helpers only: processes whose command line names that runtime's working directory (conmon monitors, waiters,
the event recorder; shims), not the pods' own processes nor gVisor's sandbox and gofer (the same under both).
Targets (issue #12): hulld's start p50 at most 0.5 x containerd 2.4's with runc, 0.6 x with runsc and for the
shim handler; memory at most half.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "e2e"))

from kubehull_harness import containerd, images, mounts, processes, registry, shims, toolchain  # noqa: E402

RUNC = "/usr/sbin/runc"
T = TypeVar("T")
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


POD_SANDBOX_PROCESSES = ("runsc-sandbox", "runsc-gofer")
"""gVisor's sandbox and gofers of each pod (their argv[0]; their comm is "exe", as runsc runs itself through
/proc/self/exe): the pod's own, the same under every runtime, so not counted."""


@dataclasses.dataclass(frozen=True)
class Memory:
    pss: float
    uss: float
    """MiB"""
    helpers: int
    by_command: dict[str, tuple[int, float]]
    """Process name (comm) → how many, their PSS in MiB: where the memory goes (``--breakdown``)."""


class Runtime:
    def __init__(self, name: str, socket: Path, process: processes.ManagedProcess, work: Path):
        self.name = name
        self.socket = socket
        self.process = process
        self.work = work
        channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime: Any = api_pb2_grpc.RuntimeServiceStub(channel)
        self.images: Any = api_pb2_grpc.ImageServiceStub(channel)

    def memory(self) -> Memory:
        """The runtime process and its own helpers: every process whose command line names its directory."""
        pids = [self.process.popen.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != self.process.popen.pid:
                try:
                    command_line = (entry / "cmdline").read_bytes().decode(errors="replace")
                    if str(self.work) in command_line and command_line.split("\0")[0] not in POD_SANDBOX_PROCESSES:
                        pids.append(int(entry.name))
                except OSError:
                    continue
        pss = uss = 0
        by_command: dict[str, tuple[int, float]] = {}
        for pid in pids:
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]  # after the range line
                command = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            kib = {key: int(value.split()[0]) for key, value in (line.split(":", 1) for line in rollup)}
            pss += kib["Pss"]
            uss += kib["Private_Clean"] + kib["Private_Dirty"]
            count, total = by_command.get(command, (0, 0.0))
            by_command[command] = (count + 1, total + kib["Pss"] / 1024)
        return Memory(pss=pss / 1024, uss=uss / 1024, helpers=len(pids) - 1, by_command=by_command)


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
[handlers.runsc]
runtime_path = "{toolchain.binary("runsc")}"
sandbox_per_pod = true
[handlers.shim-runc]
runtime_type = "vm"
runtime_path = "{toolchain.binary("containerd-shim-runc-v2")}"
""")
    process = processes.ManagedProcess("hulld", [sys.executable, "-m", "hulld", "--config", config], work / "logs")
    wait_socket(process, work / "hulld.sock")
    try:
        yield Runtime("hulld", work / "hulld.sock", process, work)
    finally:
        process.stop()
        for address in (work / "state" / "shim-events").glob("*.sock"):
            address.unlink()  # the shim handler's event recorder ends with its socket


@contextmanager
def containerd_1_6(work: Path, registry_host: str, cni_dir: Path) -> Iterator[Runtime]:
    """Debian's containerd (1.6), its configuration format 2."""
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
    process = processes.ManagedProcess("containerd-1.6", ["containerd", "--config", config], work / "logs")
    wait_socket(process, work / "containerd.sock")
    try:
        yield Runtime("containerd 1.6", work / "containerd.sock", process, work)
    finally:
        process.stop()


@contextmanager
def containerd_2_4(work: Path, registry_host: str, cni_dir: Path) -> Iterator[Runtime]:
    """The toolchain's containerd 2.4 with its own runc shim, and gVisor's shim; configuration format 3."""
    runsc_shim, runsc_shim_config = shims.runsc_shim(work / "runsc-shim")
    runtime = containerd.RUNTIME_PLUGIN
    runtimes = f"""
  [{runtime}.containerd]
    default_runtime_name = "runc"
    [{runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "{toolchain.binary("containerd-shim-runc-v2")}"
      [{runtime}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
    [{runtime}.containerd.runtimes.runsc]
      runtime_type = "io.containerd.runsc.v1"
      runtime_path = "{runsc_shim}"
      [{runtime}.containerd.runtimes.runsc.options]
        TypeUrl = "io.containerd.runsc.v1.options"
        ConfigPath = "{runsc_shim_config}"
"""
    config = containerd.write_config(work, registry_host, cni_dir, runtimes=runtimes)
    binary = toolchain.binary("containerd")
    process = processes.ManagedProcess("containerd-2.4", [binary, "--config", config], work / "logs")
    wait_socket(process, work / "containerd.sock")
    try:
        yield Runtime("containerd 2.4", work / "containerd.sock", process, work)
    finally:
        process.stop()


# As the kubelet asks for an ordinary pod: a PID namespace per container (the CRI's default, POD, is what
# shareProcessNamespace asks for, and costs hulld an infra container; containerd runs one for every pod).
KUBELET_NAMESPACES = cri.NamespaceOption(pid=cri.CONTAINER)


@dataclasses.dataclass(frozen=True)
class Started:
    pod: str
    container: str
    seconds: float
    phases: dict[str, float]
    """Seconds per CRI call: where a pod start's time goes."""


PHASES = ("RunPodSandbox", "CreateContainer", "StartContainer")


def start_pod(runtime: Runtime, handler: str, name: str, image: str, logs: Path) -> Started:
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace="bench", uid=name),
        hostname=name,
        log_directory=str(logs / name),
        linux=cri.LinuxPodSandboxConfig(
            security_context=cri.LinuxSandboxSecurityContext(namespace_options=KUBELET_NAMESPACES)
        ),
    )
    started = time.perf_counter()
    request = cri.RunPodSandboxRequest(config=config, runtime_handler=handler)
    pod = runtime.runtime.RunPodSandbox(request, timeout=120).pod_sandbox_id
    ran = time.perf_counter()
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
    created = time.perf_counter()
    runtime.runtime.StartContainer(cri.StartContainerRequest(container_id=container), timeout=120)
    ended = time.perf_counter()
    phases = dict(zip(PHASES, (ran - started, created - ran, ended - created), strict=True))
    return Started(pod, container, ended - started, phases)


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


def measure(runtime: Runtime, handler: str, image: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    def start(name: str) -> Started:
        return start_pod(runtime, handler, name, image, logs)

    for index in range(2):  # warm caches and lazily set-up state (bridge, cgroups, pause image)
        warm = start(f"warm-{handler}-{index}")
        stop_pod(runtime, warm.pod, warm.container)
    sequential, teardown = [], []
    for index in range(args.pods):
        one = start(f"seq-{handler}-{index}")
        sequential.append(one)
        teardown.append(stop_pod(runtime, one.pod, one.container))
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        begun = time.perf_counter()
        started = list(pool.map(lambda i: start(f"par-{handler}-{i}"), range(args.parallel * 2)))
        parallel_wall = time.perf_counter() - begun
        list(pool.map(lambda item: stop_pod(runtime, item.pod, item.container), started))
    parallel = [one.seconds for one in started]
    running = [start(f"mem-{handler}-{index}") for index in range(args.memory_pods)]
    time.sleep(2)
    memory = runtime.memory()
    for one in running:
        stop_pod(runtime, one.pod, one.container)
    seconds = [one.seconds for one in sequential]
    return {
        "start p50": statistics.median(seconds),
        "start p90": percentile(seconds, 0.9),
        **{f"  {phase} p50": statistics.median(one.phases[phase] for one in sequential) for phase in PHASES},
        "parallel p50": statistics.median(parallel),
        "parallel p90": percentile(parallel, 0.9),
        "parallel wall": parallel_wall,
        "teardown p50": statistics.median(teardown),
        "memory": memory,
    }


@dataclasses.dataclass(frozen=True)
class Column:
    label: str
    launch: Callable[[Path, str, Path], AbstractContextManager[Runtime]]
    handler: str


COLUMNS = (
    Column("hulld runc", hulld, "runc"),
    Column("hulld runsc", hulld, "runsc"),
    Column("hulld shim-runc", hulld, "shim-runc"),
    Column("ctrd2.4 runc", containerd_2_4, "runc"),
    Column("ctrd2.4 runsc", containerd_2_4, "runsc"),
    Column("ctrd1.6 runc", containerd_1_6, "runc"),
)
TARGETS = (
    ("hulld runc", "ctrd2.4 runc", 0.5),
    ("hulld runsc", "ctrd2.4 runsc", 0.6),
    ("hulld shim-runc", "ctrd2.4 runc", 0.6),
)
"""(column, its peer, the start p50 ratio it must reach); memory: at most 0.5 of the peer's, for each."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=20, help="sequential pods")
    parser.add_argument("--parallel", type=int, default=10, help="concurrent clients (2 pods each)")
    parser.add_argument("--memory-pods", type=int, default=50)
    parser.add_argument("--only", nargs="*", default=[], help="only these columns (labels), e.g. 'hulld runc'")
    parser.add_argument("--breakdown", action="store_true", help="also print memory by process name")
    args = parser.parse_args()
    if shutil.which("containerd") is None:
        print("containerd is not installed (Debian package containerd)", file=sys.stderr)
        return 2
    columns = [column for column in COLUMNS if not args.only or column.label in args.only]
    results = measure_columns(
        columns, lambda runtime, column, image, logs: measure(runtime, column.handler, image, args, logs)
    )
    report(results, args)
    return 0


def measure_columns(columns: list[Column], measure_one: Callable[[Runtime, Column, str, Path], T]) -> dict[str, T]:
    """Serve the test images from a local registry, start each runtime once (in the columns' order) with the
    same CNI configuration, and measure its columns with ``measure_one(runtime, column, image, pod_logs)``."""
    work = Path(tempfile.mkdtemp(prefix="hulld-bench-"))
    served = registry.start(work / "registry", work / "logs")
    results: dict[str, T] = {}
    try:
        pushed = images.preload(served, work / "images")
        pause = images.ImageSpec(repository="pause", tag="3.9", cmd=("sleep", "2147483647"))
        images.push(images.build(pause, work / "images" / "layout", work / "images"), pause, served, work / "images")
        image = pushed["busybox"].reference
        cni_dir = work / "cni"
        cni_dir.mkdir()
        (cni_dir / "10-bench.conflist").write_text(json.dumps(CNI))
        for launch in dict.fromkeys(column.launch for column in columns):  # each runtime once, in order
            directory = work / launch.__name__
            directory.mkdir()
            with launch(directory, served.host, cni_dir) as runtime:
                runtime.images.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=image)), timeout=300)
                for column in (column for column in columns if column.launch is launch):
                    print(f"measuring {column.label}...", flush=True)
                    results[column.label] = measure_one(runtime, column, image, directory / "pod-logs")
    finally:
        served.stop()
        mounts.unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    labels = list(results)
    print("\n" + f"{'':<34}" + "".join(f"{label:>17}" for label in labels))
    keys = ("start p50", "start p90", *(f"  {phase} p50" for phase in PHASES))
    for key in (*keys, "parallel p50", "parallel p90", "parallel wall", "teardown p50"):
        label = f"{key} ({args.parallel * 2} pods, {args.parallel} clients)" if key.startswith("parallel") else key
        print(f"{label:<34}" + "".join(f"{results[column][key] * 1000:>15.0f}ms" for column in labels))
    for kind in ("pss", "uss"):
        cells = "".join(f"{getattr(results[column]['memory'], kind):>14.0f}MiB" for column in labels)
        print(f"{kind.upper() + f' at {args.memory_pods} pods':<34}" + cells)
    print(f"{'(helper processes)':<34}" + "".join(f"{results[column]['memory'].helpers:>17}" for column in labels))
    if args.breakdown:
        for column in labels:
            print(f"\nPSS by process, {column}:")
            by_command = results[column]["memory"].by_command
            for command, (count, pss) in sorted(by_command.items(), key=lambda item: -item[1][1]):
                print(f"  {command:<24}{count:>5} x {pss / count:>6.1f} MiB = {pss:>7.0f} MiB")
    print()
    for column, peer, target in TARGETS:
        if column in results and peer in results:
            start = results[column]["start p50"] / results[peer]["start p50"]
            pss = results[column]["memory"].pss / results[peer]["memory"].pss
            uss = results[column]["memory"].uss / results[peer]["memory"].uss
            verdict = "met" if start <= target and pss <= 0.5 else "NOT met"
            print(
                f"{column} / {peer}: start p50 {start:.2f} (target <= {target}), PSS {pss:.2f}, USS {uss:.2f} "
                f"(target <= 0.5): {verdict}"
            )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO / "node-agent"))
    sys.exit(main())
