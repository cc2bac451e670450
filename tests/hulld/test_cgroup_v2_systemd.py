"""hulld on a modern node: cgroup v2 and the systemd cgroup driver, in a Debian 12 VM booted for the purpose
(harness ``vm``: systemd as PID 1, the unified hierarchy), with the host's checkout, toolchain and registry.

hulld runs as a systemd service (delegated, as the node agent's unit runs it) with ``cgroup_driver =
"systemd"``: each pod gets a slice, each container a scope that runc or runsc asks systemd for, directly or
through a containerd shim v2 (runc's, gVisor's). Under emulation everything is slow, so what runs here is
focused: critest's basic lifecycle specs for runc and runsc, then stats, an OOM kill, resource updates,
shim handlers and leftovers, each read from the cgroup v2 files themselves.
"""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubehull_harness import images, toolchain, vm
from kubehull_harness.pytest_plugin import OCIRegistry

pytestmark = [pytest.mark.registry, pytest.mark.root, pytest.mark.slow, pytest.mark.vm]

REPO = Path(__file__).resolve().parents[2]
POD_LOG_ROOT = "/var/log/pods"
CRITEST_LIFECYCLE = [
    "runtime should support basic operations on PodSandbox",
    "runtime should support basic operations on container",
    "runtime should support starting container with log",
]
CRITEST_LIFECYCLE_SPECS = 19
"""critest v1.37's lifecycle specs (``--ginkgo.dry-run`` with that focus): a pod run, stopped, removed, its
attributes; a container created, started, stopped, removed in each state, its attributes, execSync (with a
timeout), stats (listed and filtered), its log. A spec skipped at run time is not counted as ran."""


def guest_reference(reference: str) -> str:
    """An image of the host's test registry as the VM reaches it."""
    return reference.replace("127.0.0.1:", f"{vm.HOST_FROM_GUEST}:", 1)


class VMHulld:
    """A hulld in the VM, as a delegated systemd service (the unit ``name``) with its own socket, directories
    and pod network, and crictl against it. The systemd driver's runs every handler kind; the cgroupfs
    driver's (a cgroup v2 node without systemd's driver) runc only."""

    def __init__(self, machine: vm.DebianVM, registry_host: str, name: str, driver: str, subnet: int) -> None:
        self.vm = machine
        self.unit = name
        self.socket = f"/run/{name}/hulld.sock"
        self.state = f"/run/{name}/state"
        config = f"/etc/{name}/config.toml"
        runsc_shim_config = f"/etc/{name}/runsc-shim.toml"
        mirrors = images.critest_mirrors(guest_reference(registry_host))
        handlers = f"""
[handlers.runsc]
runtime_path = "{toolchain.binary("runsc")}"
sandbox_per_pod = true

[handlers.shim-runc]
runtime_type = "vm"
runtime_path = "{toolchain.binary("containerd-shim-runc-v2")}"

[handlers.shim-runsc]
runtime_type = "vm"
runtime_path = "{toolchain.binary("containerd-shim-runsc-v1")}"
config_path = "{runsc_shim_config}"
sandbox_per_pod = true
"""
        machine.write(
            config,
            f"""
[server]
socket = "{self.socket}"
private_socket = "/run/{name}/private.sock"
metrics_address = ""

[storage]
root = "/var/lib/{name}"
state = "{self.state}"
pod_log_root = "{POD_LOG_ROOT}"

[network]
cni_conf_dir = "/etc/{name}/cni"
cni_bin_dirs = ["/usr/lib/cni"]

[[registries]]
prefix = "{vm.HOST_FROM_GUEST}"
insecure = true
{mirrors}
[runtime]
default_handler = "runc"
cgroup_driver = "{driver}"

[handlers.runc]
runtime_path = "/usr/sbin/runc"
{handlers if driver == "systemd" else ""}""",
        )
        # Without the systemd flag: hulld adds it for the shim (a copy in its state directory).
        machine.write(runsc_shim_config, f'binary_name = "{toolchain.binary("runsc")}"\n')
        bridge = {
            "type": "bridge",
            "bridge": f"hulldvm{subnet}",
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": f"10.{232 + subnet}.0.0/24"}]],
                "dataDir": f"/run/{name}/ipam",
            },
        }
        portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
        conflist = {"cniVersion": "0.4.0", "name": name, "plugins": [bridge, portmap]}
        machine.write(f"/etc/{name}/cni/10-test.conflist", json.dumps(conflist))
        python = REPO / ".venv" / "bin" / "python"
        machine.run(
            f"systemd-run --unit={name} --property=Delegate=yes --property=KillMode=process"
            f" {python} -m hulld --config {config}"
        )

    def wait_serving(self) -> None:
        deadline = time.monotonic() + 180
        while self.crictl("info", check=False).returncode != 0:
            assert time.monotonic() < deadline, self.vm.journal(self.unit, lines=40)
            time.sleep(2)

    def crictl(self, *args: str, check: bool = True, timeout: float = 300) -> Any:
        endpoint = f"unix://{self.socket}"
        command = " ".join(
            shlex.quote(part)
            for part in [
                str(toolchain.binary("crictl")),
                f"--runtime-endpoint={endpoint}",
                f"--image-endpoint={endpoint}",
                "--timeout=120s",
                *args,
            ]
        )
        return self.vm.run(command, check=check, timeout=timeout)

    def remove_pods(self) -> None:
        for pod in self.crictl("pods", "-q", check=False).stdout.split():
            self.crictl("rmp", "-f", pod, check=False)

    def stop(self) -> None:
        self.remove_pods()
        self.vm.run(f"systemctl stop {self.unit}", check=False)


@pytest.fixture(scope="module")
def vm_hullds(debian_vm: vm.DebianVM, oci_registry: OCIRegistry) -> Iterator[dict[str, VMHulld]]:
    """Both drivers' hullds, started together (each takes a while under emulation)."""
    running = {
        "systemd": VMHulld(debian_vm, oci_registry.host, "hulld-test", "systemd", 0),
        "cgroupfs": VMHulld(debian_vm, oci_registry.host, "hulld-cgroupfs", "cgroupfs", 1),
    }
    try:
        for each in running.values():
            each.wait_serving()
        yield running
    finally:
        for each in running.values():
            each.stop()


@pytest.fixture
def hulld_in_vm(vm_hullds: dict[str, VMHulld]) -> Iterator[VMHulld]:
    """The systemd driver's hulld, its pods removed after each test: a busy container left running would keep an
    emulated CPU busy, and so one of this machine's cores, for every test after it."""
    hulld = vm_hullds["systemd"]
    yield hulld
    hulld.remove_pods()


def run_pod(
    hulld: VMHulld, image: str, handler: str, *, parent: str = "", memory: int = 0, command: str
) -> tuple[str, str]:
    """A pod and one busybox container running ``command``: their IDs."""
    name = f"t{uuid.uuid4().hex[:8]}"
    pod_config: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "vm", "uid": name},
        "log_directory": f"{POD_LOG_ROOT}/{name}",
        "linux": {"cgroup_parent": parent} if parent else {},
    }
    container_config: dict[str, Any] = {
        "metadata": {"name": "main"},
        "image": {"image": guest_reference(image)},
        "command": ["sh", "-c", command],
        "log_path": "main.log",
        "linux": {"resources": {"memory_limit_in_bytes": memory}} if memory else {},
    }
    hulld.vm.write(f"/tmp/{name}-pod.json", json.dumps(pod_config))
    hulld.vm.write(f"/tmp/{name}-container.json", json.dumps(container_config))
    pod = hulld.crictl("runp", f"--runtime={handler}", f"/tmp/{name}-pod.json").stdout.strip()
    container = hulld.crictl(
        "create", "--with-pull", pod, f"/tmp/{name}-container.json", f"/tmp/{name}-pod.json"
    ).stdout.strip()
    hulld.crictl("start", container)
    return pod, container


def scope_cgroup(hulld: VMHulld, container: str) -> str:
    """The container's cgroup directory in the VM, as systemd reports its scope's."""
    path = hulld.vm.run(f"systemctl show -P ControlGroup hulld-{container}.scope").stdout.strip()
    assert path, f"no scope for {container}"
    return f"/sys/fs/cgroup{path}"


def test_the_vm_runs_systemd_and_cgroup_v2(debian_vm: vm.DebianVM) -> None:
    assert debian_vm.run("stat -f -c %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs"
    assert debian_vm.run("readlink /proc/1/exe").stdout.strip().endswith("/systemd")
    print(f"VM booted to SSH in {debian_vm.boot_seconds:.1f}s")


def test_runtime_config_reports_the_systemd_driver(hulld_in_vm: VMHulld) -> None:
    """The kubelet takes its cgroup driver from this answer."""
    assert "SYSTEMD" in hulld_in_vm.crictl("runtime-config").stdout


@pytest.mark.parametrize("handler", ["runc", "runsc"])
def test_critest_lifecycle_specs(hulld_in_vm: VMHulld, oci_registry: OCIRegistry, handler: str) -> None:
    images_file = "/etc/hulld-test/critest-images.yaml"
    hulld_in_vm.vm.write(
        images_file,
        "".join(
            f"{key}: {guest_reference(value)}\n"
            for key, value in (
                ("defaultTestContainerImage", oci_registry.images["busybox"].reference),
                ("webServerTestImage", oci_registry.images["webserver"].reference),
            )
        ),
    )
    focus = "|".join(re.escape(name) for name in CRITEST_LIFECYCLE)
    started = time.monotonic()
    result = hulld_in_vm.vm.run(
        f"mkdir -p {POD_LOG_ROOT} && TMPDIR={POD_LOG_ROOT} {toolchain.binary('critest')}"
        f" --runtime-endpoint=unix://{hulld_in_vm.socket} --image-endpoint=unix://{hulld_in_vm.socket}"
        f" --test-images-file={images_file} --runtime-handler={handler}"
        f" --ginkgo.focus={shlex.quote(focus)} --ginkgo.no-color --ginkgo.flake-attempts=1",
        check=False,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    print(f"critest ({handler}) under emulation: {time.monotonic() - started:.0f}s")
    summary = re.search(r"Ran (\d+) of (\d+) Specs.*?\n.*?(\d+) Passed \| (\d+) Failed", output, re.S)
    assert summary is not None, output[-3000:]
    ran, passed, failed = int(summary.group(1)), int(summary.group(3)), int(summary.group(4))
    assert (ran, passed, failed) == (CRITEST_LIFECYCLE_SPECS, CRITEST_LIFECYCLE_SPECS, 0), output[-3000:]


def cpu_and_memory(hulld: VMHulld, container: str) -> tuple[int, int, int]:
    """(timestamp ns, CPU ns used, working set bytes) from the container's CRI stats."""
    stats = json.loads(hulld.crictl("stats", "-o", "json", "--id", container).stdout)["stats"][0]
    return (
        int(stats["cpu"]["timestamp"]),
        int(stats["cpu"]["usageCoreNanoSeconds"]["value"]),
        int(stats["memory"]["workingSetBytes"]["value"]),
    )


def cores_used(hulld: VMHulld, container: str) -> tuple[float, int]:
    """(CPU cores the container used over 10 s, its working set in bytes at the end), from its CRI stats."""
    first = cpu_and_memory(hulld, container)
    time.sleep(10)
    second = cpu_and_memory(hulld, container)
    return (second[1] - first[1]) / (second[0] - first[0]), second[2]


def test_stats_read_cgroup_v2(hulld_in_vm: VMHulld, oci_registry: OCIRegistry) -> None:
    busybox = oci_registry.images["busybox"].reference
    # dd's one 100 MiB buffer, filled, held while its write to a pipe nobody reads waits.
    _, holder = run_pod(hulld_in_vm, busybox, "runc", command="dd if=/dev/zero bs=104857600 count=1 | sleep 3600")
    deadline = time.monotonic() + 120
    while (held := cpu_and_memory(hulld_in_vm, holder)[2]) < 100 << 20:
        assert time.monotonic() < deadline, f"working set {held} bytes"
        time.sleep(2)
    # The numbers are the scope's own, as the kernel counts them.
    assert int(hulld_in_vm.vm.run(f"cat {scope_cgroup(hulld_in_vm, holder)}/memory.current").stdout) >= 100 << 20
    # The busy container last, and stopped once measured: it takes the VM's CPU from everything else.
    _, burner = run_pod(hulld_in_vm, busybox, "runc", command="while :; do :; done")
    cores, _ = cores_used(hulld_in_vm, burner)
    hulld_in_vm.crictl("stop", "--timeout=0", burner)
    print(f"busy container: {cores:.2f} cores")
    assert cores > 0.5


def exited(hulld: VMHulld, container: str) -> dict[str, Any]:
    """The container's CRI status once it has exited."""
    deadline = time.monotonic() + 120
    while True:
        status: dict[str, Any] = json.loads(hulld.crictl("inspect", container).stdout)["status"]
        if status["state"] == "CONTAINER_EXITED":
            return status
        assert time.monotonic() < deadline, status
        time.sleep(2)


def test_an_oom_kill_is_reported(hulld_in_vm: VMHulld, oci_registry: OCIRegistry) -> None:
    """Reported whoever sees it first: conmon, from the container's memory.events, or hulld, from the pod's
    (systemd may remove the container's scope before conmon reads it). A container killed by SIGKILL without
    an OOM kill is not reported as one."""
    busybox = oci_registry.images["busybox"].reference
    _, stubborn = run_pod(hulld_in_vm, busybox, "runc", command="trap '' TERM; sleep 3600 & wait")
    hulld_in_vm.crictl("stop", "--timeout=1", stubborn)
    killed = exited(hulld_in_vm, stubborn)
    assert (killed["reason"], killed["exitCode"]) == ("Error", 137)
    _, container = run_pod(
        hulld_in_vm,
        busybox,
        "runc",
        memory=32 << 20,
        command="exec dd if=/dev/zero of=/dev/null bs=209715200 count=1",
    )
    status = exited(hulld_in_vm, container)
    assert status["reason"] == "OOMKilled"
    assert status["exitCode"] == 137


@pytest.mark.parametrize("handler", ["shim-runc", "shim-runsc"])
def test_shim_handlers_run_in_systemd_scopes(hulld_in_vm: VMHulld, oci_registry: OCIRegistry, handler: str) -> None:
    """containerd shim v2 handlers under the systemd driver: runc's shim told so by runc's options, gVisor's by
    the copy of its runsc.toml that hulld gives it; the pod's containers are scopes in its slice, their stats
    real (gVisor's shim reports cgroup v2 metrics then), and nothing is left once the pod is removed."""
    busybox = oci_registry.images["busybox"].reference
    pod, burner = run_pod(hulld_in_vm, busybox, handler, command="while :; do :; done")
    infra = json.loads(hulld_in_vm.crictl("inspectp", pod).stdout)["info"]["infra"]
    # runc's shim runs each container on the host, in its own scope; gVisor's all of them in the sandbox's.
    scoped = [infra, *([burner] if handler == "shim-runc" else [])]
    for container in scoped:
        assert scope_cgroup(hulld_in_vm, container) == (
            f"/sys/fs/cgroup/kubehull.slice/kubehull-{pod}.slice/hulld-{container}.scope"
        )
    if handler == "shim-runsc":
        given = hulld_in_vm.vm.run(f"cat {hulld_in_vm.state}/runtimes/{handler}/runsc-shim.toml").stdout
        assert 'systemd-cgroup = "true"' in given
    cores, working_set = cores_used(hulld_in_vm, burner)
    hulld_in_vm.crictl("stop", "--timeout=0", burner)
    print(f"busy container ({handler}): {cores:.2f} cores, working set {working_set} bytes")
    assert cores > 0.5
    assert working_set > 0
    hulld_in_vm.crictl("rmp", "-f", pod)
    gone = " ".join([*(f"hulld-{container}.scope" for container in scoped), f"kubehull-{pod}.slice"])
    assert hulld_in_vm.vm.run(f"systemctl list-units --all --plain --no-legend {gone}").stdout.strip() == ""


def test_container_updates_reach_its_scope(hulld_in_vm: VMHulld, oci_registry: OCIRegistry) -> None:
    busybox = oci_registry.images["busybox"].reference
    _, container = run_pod(hulld_in_vm, busybox, "runc", command="sleep 3600")
    hulld_in_vm.crictl("update", "--cpu-quota=50000", "--cpu-period=100000", "--memory=209715200", container)
    cgroup = scope_cgroup(hulld_in_vm, container)
    assert hulld_in_vm.vm.run(f"cat {cgroup}/cpu.max").stdout.split() == ["50000", "100000"]
    assert hulld_in_vm.vm.run(f"cat {cgroup}/memory.max").stdout.strip() == "209715200"


RESIZE = """
import sys, grpc
from cri_api.v1 import api_pb2 as cri, api_pb2_grpc
runtime = api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel("unix://" + sys.argv[1]))
runtime.UpdatePodSandboxResources(cri.UpdatePodSandboxResourcesRequest(
    pod_sandbox_id=sys.argv[2],
    resources=cri.LinuxContainerResources(
        cpu_shares=512, cpu_period=100000, cpu_quota=50000, memory_limit_in_bytes=128 << 20),
    overhead=cri.LinuxContainerResources(cpu_shares=100, cpu_quota=10000, memory_limit_in_bytes=32 << 20),
), timeout=120)
"""


def resize(hulld: VMHulld, pod: str) -> None:
    hulld.vm.run(f"{REPO / '.venv/bin/python'} -c {shlex.quote(RESIZE)} {hulld.socket} {pod}")


@pytest.mark.parametrize("handler", ["runc", "runsc"])
def test_pod_resize_reaches_the_slice_and_the_sandbox(
    hulld_in_vm: VMHulld, oci_registry: OCIRegistry, handler: str
) -> None:
    """In-place pod resize (UpdatePodSandboxResources, as the kubelet sends it): hulld's own pod slice gets the
    pod's size as systemd properties, and a gVisor pod's sandbox (its infra scope) through ``runsc update``."""
    busybox = oci_registry.images["busybox"].reference
    pod, _ = run_pod(hulld_in_vm, busybox, handler, command="sleep 3600")
    resize(hulld_in_vm, pod)
    cgroups = [f"/sys/fs/cgroup/kubehull.slice/kubehull-{pod}.slice"]
    if handler == "runsc":
        cgroups.append(
            scope_cgroup(hulld_in_vm, json.loads(hulld_in_vm.crictl("inspectp", pod).stdout)["info"]["infra"])
        )
    for cgroup in cgroups:
        assert hulld_in_vm.vm.run(f"cat {cgroup}/memory.max").stdout.strip() == str(160 << 20)
        assert hulld_in_vm.vm.run(f"cat {cgroup}/cpu.max").stdout.split() == ["60000", "100000"]
        assert hulld_in_vm.vm.run(f"cat {cgroup}/cpu.weight").stdout.strip() == "24"  # 612 shares, as runc converts
    hulld_in_vm.crictl("rmp", "-f", pod)


def test_pods_get_slices_and_leave_none(hulld_in_vm: VMHulld, oci_registry: OCIRegistry) -> None:
    """A pod without a cgroup parent gets hulld's own slice, removed with it; a pod with the kubelet's slice
    as its parent has its containers' scopes there, and the slice is left to the kubelet."""
    busybox = oci_registry.images["busybox"].reference
    own_pod, own = run_pod(hulld_in_vm, busybox, "runc", command="sleep 3600")
    assert scope_cgroup(hulld_in_vm, own) == (
        f"/sys/fs/cgroup/kubehull.slice/kubehull-{own_pod}.slice/hulld-{own}.scope"
    )
    # The kubelet sends its pod slice's path, as cgroupfs would name it.
    kubelet_slice = f"kubepods-besteffort-pod{uuid.uuid4().hex}.slice"
    kubelet_path = f"/kubepods.slice/kubepods-besteffort.slice/{kubelet_slice}"
    kubelet_pod, contained = run_pod(hulld_in_vm, busybox, "runc", parent=kubelet_path, command="sleep 3600")
    assert scope_cgroup(hulld_in_vm, contained) == f"/sys/fs/cgroup{kubelet_path}/hulld-{contained}.scope"
    for pod in (own_pod, kubelet_pod):
        hulld_in_vm.crictl("rmp", "-f", pod)
    gone = f"kubehull-{own_pod}.slice hulld-{own}.scope hulld-{contained}.scope"
    assert hulld_in_vm.vm.run(f"systemctl list-units --all --plain --no-legend {gone}").stdout.strip() == ""
    assert hulld_in_vm.vm.run(f"ls /sys/fs/cgroup/kubehull.slice/kubehull-{own_pod}.slice", check=False).returncode != 0
    assert hulld_in_vm.vm.run(f"systemctl is-active {kubelet_slice}", check=False).stdout.strip() == "active"
    hulld_in_vm.vm.run(f"systemctl stop {kubelet_slice}")


def test_a_cgroup_parent_that_is_not_a_slice_is_refused(hulld_in_vm: VMHulld) -> None:
    hulld_in_vm.vm.write(
        "/tmp/bad-parent.json",
        json.dumps(
            {
                "metadata": {"name": "bad", "namespace": "vm", "uid": "bad"},
                "linux": {"cgroup_parent": "/kubepods/besteffort/podbad"},
            }
        ),
    )
    refused = hulld_in_vm.crictl("runp", "/tmp/bad-parent.json", check=False)
    assert refused.returncode != 0
    assert "linux.cgroup_parent" in refused.stderr
    assert "does not end in a systemd slice" in refused.stderr


def test_the_cgroupfs_driver_on_cgroup_v2(vm_hullds: dict[str, VMHulld], oci_registry: OCIRegistry) -> None:
    """A cgroup v2 node without systemd's driver: hulld's own pod cgroup is a directory it makes (controllers
    enabled on the way down), its container's below it, read for stats and sized by a pod resize; the driver
    reported to the kubelet says so; all of it removed with the pod."""
    hulld = vm_hullds["cgroupfs"]
    assert "CGROUPFS" in hulld.crictl("runtime-config").stdout
    busybox = oci_registry.images["busybox"].reference
    pod, container = run_pod(hulld, busybox, "runc", command="while :; do :; done")
    pod_cgroup = f"/sys/fs/cgroup/kubehull/{pod}"
    assert hulld.vm.run(f"cat {pod_cgroup}/{container}/cgroup.procs").stdout.split() != []
    cores, working_set = cores_used(hulld, container)
    print(f"busy container (cgroupfs on v2): {cores:.2f} cores")
    assert cores > 0.5
    assert working_set > 0
    resize(hulld, pod)
    assert hulld.vm.run(f"cat {pod_cgroup}/memory.max").stdout.strip() == str(160 << 20)
    assert hulld.vm.run(f"cat {pod_cgroup}/cpu.max").stdout.split() == ["60000", "100000"]
    hulld.crictl("rmp", "-f", pod)
    assert hulld.vm.run(f"test -e {pod_cgroup}", check=False).returncode != 0
