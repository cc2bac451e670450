"""End to end on a node as they are today: the Debian VM (systemd, cgroup v2) as the one node of a cluster whose
kubelet takes the systemd cgroup driver from hulld, with no ``failCgroupV1`` override (harness vm_cluster.py).
kubehull is installed with its chart; a runc pod and a gVisor pod run, and the kubelet's summary API (what
``kubectl top`` and metrics-server read) shows what they use, read by hulld from cgroup v2 and from gVisor.

Everything on the node runs under emulation, so this is one focused pass on the session's VM (booted before, for
the hulld tests). The node's side of kubehull (the agent's pod, hulld) runs there; the operator, which no node
needs, runs on this machine against the same API server with the chart's ServiceAccount (so the chart's RBAC is
what it has), its Deployment scaled to none: as a pod it made the emulated node start two Pythons at once (each
60-70 s there, 2026-12-04) and reconcile beside the agent. The local and kind clusters' tests run it as the
chart's pods. With the machine to itself this file took 331 s, the VM's boot included (403 s with the operator
as a pod, 2026-12-04).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubehull_harness import deploy, toolchain, vm, vm_cluster
from kubehull_harness.manifests import pod, profile
from kubehull_harness.operators import OperatorProcess
from kubehull_harness.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.root, pytest.mark.slow, pytest.mark.vm]

IMAGE_TAG = "0.1.0"
EMULATED_STARTUP_SECONDS = 1200
BUSY = "dmesg 2>&1 | head -n 3; echo started; while :; do :; done"
"""The kernel's first lines (gVisor's own says so), then a CPU kept busy for the summary API to show."""


@pytest.fixture(scope="module")
def cluster(
    debian_vm: vm.DebianVM, vm_live_dir: Path, component_logs: Path, pytestconfig: pytest.Config
) -> Iterator[vm_cluster.VMCluster]:
    started = time.monotonic()
    work_dir = vm_live_dir / "vm-cluster"
    with vm_cluster.run(debian_vm, work_dir, component_logs, Path(pytestconfig.rootpath)) as up:
        print(f"VM booted in {debian_vm.boot_seconds:.0f}s; node Ready after {time.monotonic() - started:.0f}s")
        yield up


def get(cluster: vm_cluster.VMCluster, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json"))
    return found


def test_the_kubelet_takes_the_systemd_driver_from_hulld_on_cgroup_v2(cluster: vm_cluster.VMCluster) -> None:
    machine = cluster.machine
    assert machine.run("stat -f -c %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs"
    settings = yaml.safe_load((cluster.work_dir / "node" / "kubelet.yaml").read_text())
    assert "cgroupDriver" not in settings
    assert "failCgroupV1" not in settings
    journal = machine.run("journalctl -u kubelet --no-pager").stdout
    assert 'cgroupDriver="systemd"' in journal, journal[-3000:]
    assert machine.run("systemctl is-active kubepods.slice").stdout.strip() == "active"
    hulld_cgroup = machine.run("systemctl show --property=ControlGroup --value hulld").stdout.strip()
    assert hulld_cgroup == "/kubehull.slice/hulld.service"  # the agent's unit: a slice of its own, delegated


@pytest.mark.timeout(1500)  # 732 s beside the host's tests in CI run 43, the operator a pod then
def test_kubehull_runs_runc_and_gvisor_pods_and_their_usage_shows(
    cluster: vm_cluster.VMCluster, image_build_dir: Path
) -> None:
    started = time.monotonic()
    image = deploy.build_and_push_image(cluster, IMAGE_TAG, image_build_dir)
    # Python's start under emulation beside the host's tests outlasted the default 300 s before the pods
    # answered (CI run 44: both restarted by their startup probes, the chart installed after 735 s).
    startup = f"agent.startupSeconds={EMULATED_STARTUP_SECONDS}"
    deploy.helm_install(cluster, image, "operator.replicas=0", startup, timeout=1200)
    installed = time.monotonic()
    with host_operator(cluster):
        manifest = cluster.work_dir / "apply.yaml"
        manifest.write_text(
            yaml.safe_dump_all(
                [profile("runc", "runc", "/usr/sbin/runc"), profile("gvisor", "gvisor", toolchain.binary("runsc"))]
            )
        )
        cluster.kubectl("apply", "-f", manifest)
        for name in ("runc", "gvisor"):
            wait_until(functools.partial(profile_ready, cluster, name), 900, f"RuntimeProfile {name} Ready", interval=5)
        ready = time.monotonic()
        manifest.write_text(
            yaml.safe_dump_all([pod("on-runc", image, "runc", BUSY), pod("on-gvisor", image, "gvisor", BUSY)])
        )
        cluster.kubectl("apply", "-f", manifest)
        for name in ("on-runc", "on-gvisor"):
            wait_until(functools.partial(started_log, cluster, name), 600, f"pod {name} started", interval=5)
        assert "gVisor" in started_log(cluster, "on-gvisor")
        assert "gVisor" not in started_log(cluster, "on-runc")
        running = time.monotonic()
        shown = functools.partial(pod_usage, cluster)
        usage = wait_until(shown, 300, "both pods' usage in the summary API", interval=10)
        print(
            f"image built and chart installed in {installed - started:.0f}s, profiles Ready (the agent's pod started"
            f" first) in {ready - installed:.0f}s, "
            f"pods started in {running - ready:.0f}s; usage: {usage}"
        )
        # Removed through the kubelet (their shells, PID 1, ignore SIGTERM: they would hold the VM's shutdown).
        cluster.kubectl("delete", "pod", "-n", "default", "on-runc", "on-gvisor", "--wait", timeout=300)


@contextlib.contextmanager
def host_operator(cluster: vm_cluster.VMCluster) -> Iterator[None]:
    """The operator on this machine, as the chart's ServiceAccount, leading through the chart's Lease (which only
    the chart's RBAC lets it take)."""
    account = f"{deploy.RELEASE}-operator"
    kubeconfig = cluster.api.service_account_kubeconfig(deploy.NAMESPACE, account)
    namespace = f"--namespace={deploy.NAMESPACE}"
    lease = (f"--lease-namespace={deploy.NAMESPACE}", f"--lease-name={account}")
    running = OperatorProcess(kubeconfig, cluster.logs, namespace, *lease)
    try:
        wait_until(lambda: "kubehull_operator_leader 1.0" in running.metrics(), 60, "the operator leading")
        yield
    finally:
        running.stop()


def profile_ready(cluster: vm_cluster.VMCluster, name: str) -> bool:
    status = get(cluster, "runtimeprofile", name).get("status") or {}
    conditions = {condition["type"]: condition["status"] for condition in status.get("conditions", [])}
    return conditions.get("Ready") == "True" and status.get("ready") == "1/1"


def started_log(cluster: vm_cluster.VMCluster, name: str) -> str:
    log = cluster.kubectl("logs", "-n", "default", name, timeout=60)
    return log if "started" in log else ""


def pod_usage(cluster: vm_cluster.VMCluster) -> dict[str, tuple[float, int]]:
    """Each test pod's (CPU cores, working set bytes) as the kubelet's summary API reports them, once both show
    their busy loop. Until then the assertion is "not yet": a pod's first entry reads 0 cores and 0 bytes by
    design (the kubelet takes a pod cgroup that cAdvisor has sampled once as zero usage), so only a wait that
    never sees usage fails, naming the figures it saw last."""
    summary = json.loads(cluster.kubectl("get", "--raw", f"/api/v1/nodes/{cluster.node_name}/proxy/stats/summary"))
    usage: dict[str, tuple[float, int]] = {}
    for entry in summary.get("pods", []):
        name = entry["podRef"]["name"]
        cpu, memory = entry.get("cpu", {}), entry.get("memory", {})
        if name in ("on-runc", "on-gvisor"):
            usage[name] = (cpu.get("usageNanoCores", 0) / 1e9, memory.get("workingSetBytes", 0))
    assert len(usage) == 2, usage
    for cores, working_set in usage.values():
        assert cores > 0.2, usage  # a busy loop on an emulated CPU
        assert working_set > 0, usage
    return usage
