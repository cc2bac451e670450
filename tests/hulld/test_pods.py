"""Pods as runtimes see them: one gVisor sandbox per pod, and one PID namespace for the containers of a pod that
shares it (Kubernetes' shareProcessNamespace, the CRI's POD mode), for runc and runsc alike."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from kubehull_harness import processes
from kubehull_harness.pytest_plugin import OCIRegistry
from kubehull_harness.waiting import wait_until
from tests.hulld.conftest import Hulld, pod_cgroups, pod_network_rules
from tests.hulld.test_lifecycle import write

pytestmark = [pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

POD_PID = 0
CONTAINER_PID = 1
"""The CRI's NamespaceMode values, as crictl's JSON takes them."""


def run_pod(hulld: Hulld, tmp_path: Path, name: str, handler: str, pid_mode: int) -> tuple[str, str]:
    """A pod as the kubelet asks for one (its own PID namespace per container unless told otherwise)."""
    pod_file = write(
        tmp_path / f"{name}-pod.json",
        {
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "hostname": name,
            "log_directory": str(hulld.pod_log_root / name),
            "linux": {"security_context": {"namespace_options": {"pid": pid_mode}}},
        },
    )
    return hulld.crictl("runp", "--runtime", handler, pod_file).stdout.strip(), pod_file


def start(
    hulld: Hulld, tmp_path: Path, pod: str, pod_file: str, name: str, image: str, pid_mode: int, *command: str
) -> str:
    """A container of ``image`` running ``command`` (else the image's own), in the PID mode the kubelet gives."""
    config: dict[str, object] = {
        "metadata": {"name": name},
        "image": {"image": image},
        "command": list(command),
        "log_path": f"{name}.log",
        "linux": {"security_context": {"namespace_options": {"pid": pid_mode}}},
    }
    container = hulld.crictl("create", pod, write(tmp_path / f"{name}.json", config), pod_file).stdout.strip()
    hulld.crictl("start", container)
    return container


def run(hulld: Hulld, container: str, *command: str) -> str:
    return hulld.crictl("exec", "-s", container, *command).stdout


@pytest.fixture
def images(hulld_with_network: Hulld, oci_registry: OCIRegistry) -> dict[str, str]:
    references = {key: oci_registry.images[key].reference for key in ("busybox", "webserver")}
    for reference in references.values():
        hulld_with_network.crictl("pull", reference)
    return references


@pytest.mark.parametrize("handler", ["runsc", "shim-runsc"])
def test_a_gvisor_pod_is_one_sandbox(
    hulld_with_network: Hulld, images: dict[str, str], tmp_path: Path, handler: str
) -> None:
    """A web server and a client in one gVisor pod: one kernel, one network stack, so localhost reaches the
    other container (before, each container was its own sandbox and the fetch was refused, silently)."""
    hulld = hulld_with_network
    pod, pod_file = run_pod(hulld, tmp_path, "gv-pod", handler, CONTAINER_PID)
    web = start(hulld, tmp_path, pod, pod_file, "web", images["webserver"], CONTAINER_PID)
    client = start(hulld, tmp_path, pod, pod_file, "client", images["busybox"], CONTAINER_PID, "sleep", "3600")
    page = wait_until(
        lambda: run(hulld, client, "wget", "-q", "-O", "-", "http://127.0.0.1:80/"), what="the page over localhost"
    )
    assert "kubehull test web server" in page
    assert "gvisor" in run(hulld, web, "uname", "-r")
    kernel_logs = {run(hulld, container, "dmesg") for container in (web, client)}
    assert len(kernel_logs) == 1  # one kernel: one boot, one log
    links = {run(hulld, container, "ip", "-o", "link") for container in (web, client)}
    assert len(links) == 1  # one network stack

    other, other_file = run_pod(hulld, tmp_path, "gv-other", handler, CONTAINER_PID)
    stranger = start(hulld, tmp_path, other, other_file, "other", images["busybox"], CONTAINER_PID, "sleep", "3600")
    assert run(hulld, stranger, "dmesg") not in kernel_logs  # another pod, another kernel
    inspected = json.loads(hulld.crictl("inspectp", pod).stdout)
    assert inspected["status"]["linux"]["namespaces"]["options"]["pid"] == "CONTAINER"
    hulld.crictl("rmp", "-f", pod, other)
    assert hulld.crictl("pods", "-q").stdout.split() == []


def processes_naming(*words: str) -> list[tuple[int, list[str]]]:
    """(PID, argv) of every process whose command line holds all of ``words``."""
    return [
        (pid, argv)
        for pid, argv in processes.machine_processes().items()
        if all(any(word in argument for argument in argv) for word in words)
    ]


def test_a_gvisor_pod_ends_with_its_sandbox(hulld_with_network: Hulld, images: dict[str, str], tmp_path: Path) -> None:
    """conmon watches a gVisor pod's sandbox process itself (no `runsc wait` for the infra container, one per
    other container): when the sandbox dies, the pod is not ready and its containers have exited."""
    hulld = hulld_with_network
    pod, pod_file = run_pod(hulld, tmp_path, "gv-dies", "runsc", CONTAINER_PID)
    container = start(hulld, tmp_path, pod, pod_file, "idle", images["busybox"], CONTAINER_PID, "sleep", "3600")
    infra = json.loads(hulld.crictl("inspectp", pod).stdout)["info"]["infra"]
    waiters = processes_naming(str(hulld.work_dir), "wait")
    assert [argv[-1] for _, argv in waiters if argv[-2] == "wait"] == [container]
    [(sandbox, _)] = [(pid, argv) for pid, argv in processes_naming(infra) if argv[0] == "runsc-sandbox"]

    os.kill(sandbox, 9)
    wait_until(
        lambda: json.loads(hulld.crictl("inspectp", pod).stdout)["status"]["state"] == "SANDBOX_NOTREADY",
        30,
        "the pod not ready",
    )
    wait_until(
        lambda: json.loads(hulld.crictl("inspect", container).stdout)["status"]["state"] == "CONTAINER_EXITED",
        30,
        "its container exited",
    )
    hulld.crictl("rmp", "-f", pod)
    assert processes_naming(infra) == []


def test_a_gvisor_shim_file_that_disagrees_with_the_cgroup_driver_is_refused(
    hulld_with_network: Hulld, tmp_path: Path
) -> None:
    """gVisor's shim takes its cgroup mode from its runsc.toml: one that says systemd on this cgroupfs node would
    have runsc read hulld's cgroups paths wrongly, so the pod is refused, naming the setting, and nothing is left;
    with the file fixed, the pod runs."""
    hulld = hulld_with_network
    shim_config = hulld.work_dir / "runsc-shim" / "runsc-shim.toml"
    fine = shim_config.read_text()
    shim_config.write_text(fine + '[runsc_config]\nsystemd-cgroup = "true"\n')
    pod_file = write(tmp_path / "pod.json", {"metadata": {"name": "gv-driver", "namespace": "default", "uid": "u"}})
    refused = hulld.crictl("runp", "--runtime", "shim-runsc", pod_file, check=False)
    assert refused.returncode != 0
    assert "handlers.shim-runsc.config_path" in refused.stderr
    assert "sets runsc_config.systemd-cgroup = 'true', but runtime.cgroup_driver is cgroupfs" in refused.stderr
    assert hulld.crictl("pods", "-q").stdout.split() == []
    shim_config.write_text(fine)
    pod = hulld.crictl("runp", "--runtime", "shim-runsc", pod_file).stdout.strip()
    hulld.crictl("rmp", "-f", pod)


@pytest.mark.parametrize("handler", ["runc", "runsc", "shim-runc", "shim-runsc"])
def test_containers_of_a_pod_sharing_its_pid_namespace_see_each_other(
    hulld_with_network: Hulld, images: dict[str, str], tmp_path: Path, handler: str
) -> None:
    hulld = hulld_with_network
    shared, shared_file = run_pod(hulld, tmp_path, f"share-{handler}", handler, POD_PID)
    first = start(hulld, tmp_path, shared, shared_file, "first", images["busybox"], POD_PID, "sleep", "3601")
    second = start(hulld, tmp_path, shared, shared_file, "second", images["busybox"], POD_PID, "sleep", "3602")
    assert "sleep 3601" in run(hulld, second, "ps")  # the other container's process
    assert "sleep 3602" in run(hulld, first, "ps")
    status = json.loads(hulld.crictl("inspectp", shared).stdout)["status"]
    assert status["linux"]["namespaces"]["options"]["pid"] == "POD"
    # PID 1 is the pod's infra container: nobody, without a single capability.
    infra = dict(line.split(":", 1) for line in run(hulld, first, "cat", "/proc/1/status").splitlines() if ":" in line)
    assert infra["Uid"].split()[:2] == ["65534", "65534"]
    assert int(infra["CapEff"], 16) == 0
    if not handler.endswith("runsc"):  # on the host too: one PID namespace, the infra container's
        pids = [json.loads(hulld.crictl("inspect", c).stdout)["info"]["pid"] for c in (first, second)]
        assert len({os.readlink(f"/proc/{pid}/ns/pid") for pid in pids}) == 1

    apart, apart_file = run_pod(hulld, tmp_path, f"apart-{handler}", handler, CONTAINER_PID)
    alone = start(hulld, tmp_path, apart, apart_file, "alone", images["busybox"], CONTAINER_PID, "sleep", "3603")
    start(hulld, tmp_path, apart, apart_file, "unseen", images["busybox"], CONTAINER_PID, "sleep", "3604")
    assert "sleep 3604" not in run(hulld, alone, "ps")
    hulld.crictl("rmp", "-f", shared, apart)
    assert hulld.crictl("pods", "-q").stdout.split() == []


@pytest.mark.parametrize("handler", ["runc", "runsc", "shim-runc", "shim-runsc"])
def test_pod_resize_reaches_the_pod_cgroup_and_the_sandbox(
    hulld_with_network: Hulld, images: dict[str, str], tmp_path: Path, handler: str
) -> None:
    """In-place pod resize: the kubelet resizes the pod cgroup it owns and tells the runtime; what hulld owns
    follows: its own pod cgroup (a pod without a cgroup parent) and, for gVisor, the pod's sandbox."""
    hulld = hulld_with_network
    pod, pod_file = run_pod(hulld, tmp_path, f"resized-{handler}", handler, CONTAINER_PID)
    start(hulld, tmp_path, pod, pod_file, "main", images["busybox"], CONTAINER_PID, "sleep", "3600")
    hulld.runtime().UpdatePodSandboxResources(
        cri.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=pod,
            resources=cri.LinuxContainerResources(
                cpu_shares=512, cpu_period=100000, cpu_quota=50000, memory_limit_in_bytes=128 << 20
            ),
            overhead=cri.LinuxContainerResources(cpu_shares=100, cpu_quota=10000, memory_limit_in_bytes=32 << 20),
        )
    )
    cgroups = [Path("/sys/fs/cgroup/{}/kubehull") / pod]
    if handler.endswith("runsc"):  # the gVisor sandbox: its infra container's cgroup
        cgroups.append(cgroups[0] / json.loads(hulld.crictl("inspectp", pod).stdout)["info"]["infra"])
    for cgroup in cgroups:
        assert Path(str(cgroup).format("memory"), "memory.limit_in_bytes").read_text().strip() == str(160 << 20)
        assert Path(str(cgroup).format("cpu"), "cpu.cfs_quota_us").read_text().strip() == "60000"
        assert Path(str(cgroup).format("cpu"), "cpu.shares").read_text().strip() == "612"
    with pytest.raises(grpc.RpcError) as unknown:
        hulld.runtime().UpdatePodSandboxResources(cri.UpdatePodSandboxResourcesRequest(pod_sandbox_id="0" * 64))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    hulld.crictl("rmp", "-f", pod)


@contextlib.contextmanager
def hulld_with_altered_runc(
    tmp_path: Path, component_logs: Path, registry_host: str, handler: str, step: str, action: str
) -> Iterator[Hulld]:
    """A hulld whose handler ``handler`` is runc, except that it runs the shell line ``action`` when asked to
    ``step`` (create, start...). After the body, nothing of any pod is left: no pod listed, no pod files, no
    pod cgroup, no CNI rule, no process."""
    altered = tmp_path / f"runc-{handler}"
    altered.write_text(
        f'#!/bin/sh\nfor word in "$@"; do [ "$word" = {step} ] && {action}; done\nexec /usr/sbin/runc "$@"\n'
    )
    altered.chmod(0o755)
    cgroups_before, rules_before = pod_cgroups(), pod_network_rules()
    hulld = Hulld(
        tmp_path / "hulld",
        component_logs,
        registry_host,
        network=True,
        extra_config=f'\n[handlers.{handler}]\nruntime_path = "{altered}"\n',
    )
    try:
        yield hulld
        assert hulld.crictl("pods", "-q").stdout.split() == []
        assert list((hulld.root / "sandboxes").iterdir()) == []
        assert pod_cgroups() - cgroups_before == set()
        assert pod_network_rules() - rules_before == set()
    finally:
        assert hulld.tear_down() == []


def test_a_pod_whose_sandbox_fails_to_start_leaves_nothing(
    tmp_path: Path, component_logs: Path, oci_registry: OCIRegistry
) -> None:
    """RunPodSandbox fails after runc made the pod's cgroup and the network was set up (its infra container is
    created, then cannot start): the error says so, and the pod's record, files, cgroup, namespaces and CNI rules
    are gone."""
    with hulld_with_altered_runc(
        tmp_path, component_logs, oci_registry.host, "cannot-start", "start", "exit 1"
    ) as hulld:
        pod_file = write(tmp_path / "pod.json", {"metadata": {"name": "fails", "namespace": "default", "uid": "u"}})
        refused = hulld.crictl("runp", "--runtime", "cannot-start", pod_file, check=False)
        assert refused.returncode != 0


def test_a_pod_removed_while_it_is_being_set_up_leaves_nothing(
    tmp_path: Path, component_logs: Path, oci_registry: OCIRegistry
) -> None:
    """RemovePodSandbox of a pod whose RunPodSandbox is still under way (listed: its name is claimed) waits for
    the set-up to end, then removes all of it: tearing down meanwhile missed what the set-up made after (the
    infra container, its cgroup; seen when a node agent that was starting a probe pod was itself removed)."""
    with hulld_with_altered_runc(tmp_path, component_logs, oci_registry.host, "slow", "create", "sleep 3") as hulld:
        pod_file = write(tmp_path / "pod.json", {"metadata": {"name": "slow", "namespace": "default", "uid": "u"}})
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(hulld.crictl, "runp", "--runtime", "slow", pod_file)
            listed = wait_until(lambda: hulld.crictl("pods", "-q").stdout.split(), what="the pod listed")
            assert not running.done()
            hulld.crictl("rmp", "-f", *listed)
            assert running.result().stdout.strip() == listed[0]


def test_an_exec_that_times_out_before_it_runs_is_still_killed(
    tmp_path: Path, component_logs: Path, oci_registry: OCIRegistry
) -> None:
    """ExecSync's timeout comes before `runc exec` has even written the command's PID (2 s late here; more than
    the 1 s timeout under emulation in CI): hulld waits for the PID and kills the command, which is gone when
    the error comes back (critest: "execSync with timeout", then "timeout exec process should be gone")."""
    with hulld_with_altered_runc(tmp_path, component_logs, oci_registry.host, "slow-exec", "exec", "sleep 2") as hulld:
        pod, pod_file = run_pod(hulld, tmp_path, "slow", "slow-exec", CONTAINER_PID)
        busybox = oci_registry.images["busybox"].reference
        hulld.crictl("pull", busybox)
        container = start(hulld, tmp_path, pod, pod_file, "main", busybox, CONTAINER_PID, "sleep", "3600")
        timed_out = hulld.crictl("exec", "-s", "--timeout=1", container, "sleep", "4321", check=False)
        assert timed_out.returncode != 0
        assert "timed out after 1s" in timed_out.stderr
        assert "sleep 4321" not in run(hulld, container, "ps", "-o", "args")
        hulld.crictl("rmp", "-f", pod)
