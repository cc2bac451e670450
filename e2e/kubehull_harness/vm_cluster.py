"""A one-node Kubernetes cluster whose node is the Debian VM (vm.py): systemd as PID 1, cgroup v2, and a kubelet
that takes the systemd cgroup driver from hulld, with no ``failCgroupV1`` override — a node as they are today.

    with vm_cluster.run(machine, work_dir, logs, checkout) as cluster: ...

The control plane runs on this machine (etcd, kube-apiserver advertised on the host's end of a TAP link to the
VM, kube-controller-manager, kube-scheduler, the registry on loopback, which the VM reaches at 10.0.2.2). The
node is provisioned as a node image for a systemd host would be: hulld's base configuration naming the systemd
driver and the registry's address from inside, hulld as the node agent's own ``hulld.service`` unit, then the
kubelet and kube-proxy as systemd units. Their certificates and kubeconfigs are written under the work
directory, which must be one the VM sees live (the ``debian_vm`` fixture's ``vm_live_dir``). The API server
reaches the kubelet over the link (logs, exec, the summary API). The teardown leaves the VM as it found it for
the next test: the node's units stopped, its pods removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from kubehull_agent import install
from kubehull_harness import apiserver, cluster, etcd, processes, registry, toolchain, vm

NODE_NAME = "kubehull-vm"
POD_LOGS = Path("/var/log/pods")


@dataclasses.dataclass
class VMCluster(cluster.OneNodeCluster):
    machine: vm.DebianVM


def _registries(registry_host: str) -> str:
    """The host's registry under its own name (what the chart's image references say) and as the VM reaches it."""
    port = registry_host.rsplit(":", 1)[1]
    inside = f"{vm.HOST_FROM_GUEST}:{port}"
    return (
        f'[[registries]]\nprefix = "{registry_host}"\ninsecure = true\nmirrors = ["{inside}"]\n\n'
        f'[[registries]]\nprefix = "{vm.HOST_FROM_GUEST}"\ninsecure = true\n'
    )


def _unit(name: str, argv: list[str]) -> str:
    return (
        f"[Unit]\nDescription={name}\nAfter=hulld.service\n\n"
        f"[Service]\nExecStart={shlex.join(argv)}\nRestart=always\nRestartSec=2\n"
    )


@contextlib.contextmanager
def run(
    machine: vm.DebianVM, work_dir: Path, logs: Path, checkout: Path, *, timeout: float = 480
) -> Iterator[VMCluster]:
    """Start the control plane, make the VM (linked to this machine) a Ready node, yield the cluster, tear it
    all down."""
    if machine.link is None:
        raise vm.VMError("a VM cluster's node needs a link to this machine (vm.HostLink)")
    link = machine.link
    node_dir = work_dir / "node"  # the node's kubeconfigs and settings (its certificates are in pki/)
    node_dir.mkdir(parents=True)
    with contextlib.ExitStack() as teardown:
        store = etcd.start(work_dir, logs)
        teardown.callback(store.stop)
        api = apiserver.start(work_dir, logs, store.client_url, advertise_address=link.host_address)
        teardown.callback(api.stop)
        cluster.start_controllers(api, work_dir, logs, teardown)
        served = registry.start(work_dir / "registry", logs)
        teardown.callback(served.stop)
        url_from_node = api.url.replace("127.0.0.1", link.host_address)

        # hulld as a node image for a systemd host provisions it: the driver named, the node agent's unit.
        base = cluster.hulld_base_config(
            root=Path("/var/lib/hulld"),
            pod_logs=POD_LOGS,
            cni_dir=Path("/etc/cni/net.d"),
            metrics_port=9105,
            registries=_registries(served.host),
            runtime='cgroup_driver = "systemd"',
        )
        machine.write(str(cluster.HULLD_BASE_CONFIG), base)
        machine.write(str(cluster.HULLD_CONFIG), base)
        machine.write("/etc/cni/net.d/10-kubehull.conflist", cluster.cni_config(Path("/var/lib/cni-ipam")))
        launcher = f"{checkout / '.venv' / 'bin' / 'python'} -m hulld"
        machine.write(str(install.UNIT_PATH), install.UNIT.format(launcher=launcher, config=cluster.HULLD_CONFIG))

        credentials = api.ca.issue(
            "kubelet-client", f"system:node:{NODE_NAME}", organizations=["system:nodes"], client=True
        )
        node_kubeconfig = node_dir / "kubelet.kubeconfig"
        apiserver.write_kubeconfig(
            node_kubeconfig, url_from_node, api.ca.cert_path, credentials, f"system:node:{NODE_NAME}"
        )
        proxy_kubeconfig = node_dir / "kube-proxy.kubeconfig"
        proxy_credentials = api.ca.issue("kube-proxy", "system:kube-proxy", client=True)
        apiserver.write_kubeconfig(proxy_kubeconfig, url_from_node, api.ca.cert_path, proxy_credentials, "proxy")
        serving = api.ca.issue("kubelet-serving", NODE_NAME, hosts=[link.guest_address, NODE_NAME], server=True)
        settings = cluster.kubelet_config(POD_LOGS, api, serving)  # no cgroupDriver: hulld's; no failCgroupV1
        (node_dir / "kubelet.yaml").write_text(yaml.safe_dump(settings))
        kubelet = [
            str(toolchain.binary("kubelet")),
            f"--config={node_dir / 'kubelet.yaml'}",
            f"--kubeconfig={node_kubeconfig}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={link.guest_address}",
            "--v=2",
        ]
        proxy = [
            str(toolchain.binary("kube-proxy")),
            f"--kubeconfig={proxy_kubeconfig}",
            f"--hostname-override={NODE_NAME}",
            "--proxy-mode=iptables",
            f"--cluster-cidr={cluster.POD_SUBNET}",
            "--conntrack-max-per-core=0",
        ]
        machine.write("/etc/systemd/system/kubelet.service", _unit("kubelet", kubelet))
        machine.write("/etc/systemd/system/kube-proxy.service", _unit("kube-proxy", proxy))
        teardown.callback(_tear_down_node, machine)
        machine.run("systemctl daemon-reload && systemctl start hulld kubelet kube-proxy")
        local = VMCluster(api=api, registry=served, machine=machine, node_name=NODE_NAME, work_dir=work_dir, logs=logs)
        teardown.callback(_save_node_logs, machine, logs)
        _wait_ready(local, timeout)
        yield local


def _wait_ready(local: VMCluster, timeout: float) -> None:
    """Wait for the node to be Ready; failing, say why: QEMU gone, SSH silent, or the node's own account."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(processes.ProcessError):
            if local.node_ready():
                return
        machine = local.machine
        if machine.process.popen.poll() is not None:
            raise processes.ProcessError(f"QEMU exited with {machine.process.popen.returncode}:\n{machine.console()}")
        if time.monotonic() > deadline:
            account = _account(local)
            raise processes.ProcessError(f"node {local.node_name} was not Ready within {timeout:.0f}s\n{account}")
        time.sleep(5)


def _account(local: VMCluster) -> str:
    """What the API server says of the node, the node's journals (or why they cannot be read), the VM's console."""
    try:
        conditions = local.kubectl("get", "node", local.node_name, "-o", "jsonpath={.status.conditions}")
    except processes.ProcessError as error:
        conditions = f"not read: {error}"
    journal = local.machine.journal("hulld", "kubelet", lines=60, timeout=60)
    # QEMU pauses a guest whose disk write fails for want of space (werror=enospc): silent, so say how much is left.
    free = shutil.disk_usage(local.work_dir).free / 2**30
    return (
        f"node conditions: {conditions}\nfree on the host's disk: {free:.1f} GiB\njournal:\n{journal}\n"
        f"console:\n{local.machine.console()}"
    )


def _tear_down_node(machine: vm.DebianVM) -> None:
    """The node's units stopped and the pods its kubelet left (the chart's) removed, so that nothing of the
    cluster's keeps the VM's emulated CPUs busy for the tests after it."""
    machine.run("systemctl stop kubelet kube-proxy")
    # crictl's own deadline for a call is 2 s: too short for stopping a gVisor sandbox under emulation.
    crictl = f"{toolchain.binary('crictl')} --runtime-endpoint=unix://{cluster.HULLD_SOCKET} --timeout=120s"
    machine.run(f"{crictl} rmp --all --force", timeout=600)
    machine.run("systemctl stop hulld")


def _save_node_logs(machine: vm.DebianVM, logs: Path) -> None:
    """The node's units' journals, into the component logs (kept when a test fails)."""
    for unit in ("hulld", "kubelet", "kube-proxy"):
        (logs / f"vm-{unit}.log").write_text(machine.journal(unit))
