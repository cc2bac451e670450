"""A real one-node Kubernetes cluster on this machine, its container runtime hulld.

    with cluster.run(work_dir, logs) as local: ...     # or `python -m kubehull_harness up`

Control plane: etcd, kube-apiserver (advertised on the node's address so pods reach it through the
``kubernetes`` Service), kube-controller-manager and kube-scheduler. The node is this machine, provisioned the
way a node image with hulld would be: hulld's base configuration in /etc/kubehull/hulld-base.toml (socket,
storage, CNI, the local registry as insecure, the default ``runc`` handler), hulld started from
/etc/hulld/config.toml with its pid file and socket in /run/hulld — exactly where the node agent's DaemonSet
finds, adopts and from then on configures it. Then the kubelet on hulld's socket (cgroupfs, cgroup v1 allowed)
and kube-proxy (iptables). Pods get a CNI bridge from Debian's plugins.

Teardown leaves nothing behind: every pod's sandbox is removed through hulld (containers, mounts, network
namespaces), the processes stop, the kubelet's cgroups are removed, kube-proxy removes its rules, and the
files the node was provisioned with are deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc

from kubehull_harness import apiserver, etcd, host_cgroups, mounts, processes, registry, toolchain

NODE_NAME = "kubehull-node"
POD_SUBNET = "10.88.0.0/16"
BRIDGE = "kubehull0"
# The host paths a node with hulld has; the chart's agent DaemonSet mounts the same ones.
HULLD_BASE_CONFIG = Path("/etc/kubehull/hulld-base.toml")
HULLD_CONFIG = Path("/etc/hulld/config.toml")
HULLD_STATE = Path("/run/hulld")
HULLD_SOCKET = HULLD_STATE / "hulld.sock"
HULLD_PRIVATE_SOCKET = HULLD_STATE / "private.sock"  # hulld's default: beside its socket
HULLD_PID_FILE = HULLD_STATE / "hulld.pid"
NODE_PATHS = (
    HULLD_CONFIG.parent,
    Path("/opt/kubehull"),
    Path("/var/log/kubehull"),
    Path("/run/kubehull"),  # the agent's install lock
    HULLD_BASE_CONFIG.parent,  # last: it holds RUN_MARK
)
# Written first and removed last by a run: the node paths it finds at start are an earlier run's that was stopped
# before its teardown (the machine restarted, the harness was killed), not a real node's.
RUN_MARK = HULLD_BASE_CONFIG.parent / "kubehull-harness-work-dir"


def node_address() -> str:
    """The address of the interface the default route leaves through: where pods reach the API server."""
    route = processes.run(["ip", "-4", "-o", "route", "get", "192.0.2.255"]).stdout.split()
    return route[route.index("src") + 1]


@dataclasses.dataclass
class Hulld:
    """The node's hulld, started the way a node image's init would: a host process with a pid file."""

    command: list[str]
    log_dir: Path
    process: processes.ManagedProcess | None = None

    def start(self) -> None:
        self.process = processes.ManagedProcess("hulld", self.command, self.log_dir)
        self.process.wait_ready(self.serving, 60, f"serving CRI on {HULLD_SOCKET}")

    def serving(self) -> bool:
        with grpc.insecure_channel(f"unix://{HULLD_SOCKET}") as channel:
            api_pb2_grpc.RuntimeServiceStub(channel).Version(cri.VersionRequest(), timeout=2)
        return True

    def pid(self) -> int:
        return int(HULLD_PID_FILE.read_text())

    def kill(self) -> None:
        """SIGKILL hulld alone (not its process group: the container monitors must survive, as on a node)."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
            time.sleep(0.05)
        if self.process is not None:
            self.process.popen.wait(timeout=10)

    def remove_all_pods(self, rounds: int = 5) -> None:
        """Every pod through hulld (containers, mounts, network namespaces), the kubelet's and the node agent's
        probe pods (which only hulld's private socket lists); one that fails does not keep the others. Again
        until none is listed: the node agent, itself a pod here, may be starting a probe pod while the first
        round removes it (a gVisor shim started then would outlive hulld)."""
        failures: dict[str, str] = {}
        for socket in (HULLD_SOCKET, HULLD_PRIVATE_SOCKET):
            with grpc.insecure_channel(f"unix://{socket}") as channel:
                runtime = api_pb2_grpc.RuntimeServiceStub(channel)
                for _ in range(rounds):
                    listed = runtime.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=30).items
                    remaining = [sandbox for sandbox in listed if sandbox.id not in failures]
                    if not remaining:
                        break
                    for sandbox in remaining:
                        try:
                            runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=120)
                            runtime.RemovePodSandbox(
                                cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=120
                            )
                        except grpc.RpcError as error:
                            failures[sandbox.id] = f"{sandbox.metadata.name}: {error}"
                else:
                    failures[str(socket)] = f"pods still appearing on {socket} after {rounds} rounds of removal"
        if failures:
            raise processes.ProcessError("pods hulld could not remove:\n" + "\n".join(failures.values()))

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(self.pid(), signal.SIGTERM)
        if self.process is not None:
            self.process.stop(grace=20)


@dataclasses.dataclass
class OneNodeCluster:
    """What every test cluster has — an API server, the registry, one node — and kubectl against it (the local
    cluster here, the VM's in vm_cluster.py)."""

    api: apiserver.KubeAPIServer
    registry: registry.Registry
    node_name: str
    work_dir: Path
    logs: Path

    @property
    def kubeconfig(self) -> Path:
        return self.api.kubeconfig

    def node_ready(self) -> bool:
        ready = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        return self.kubectl("get", "node", self.node_name, "-o", ready).strip() == "True"

    def kubectl(self, *args: processes.Arg, timeout: float = 120, stdin: str | None = None) -> str:
        command = [toolchain.binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        return processes.run(command, timeout=timeout, input=stdin).stdout

    def apply(self, manifest: str) -> str:
        return self.kubectl("apply", "-f", "-", stdin=manifest)


@dataclasses.dataclass
class LocalCluster(OneNodeCluster):
    hulld: Hulld
    kubelet: processes.ManagedProcess
    node_ip: str

    @property
    def host_pid(self) -> int:
        """The process the agent's pod reaches the host through: init, unless this machine's init refuses
        inspection even to root (on these VMs PID 1 is a sandbox's process_api); then the kubelet."""
        try:
            os.readlink("/proc/1/ns/mnt")
        except PermissionError:
            return self.kubelet.popen.pid
        return 1


LOOPBACK_REGISTRIES = '[[registries]]\nprefix = "127.0.0.1"  # the local registry: HTTP on loopback\ninsecure = true\n'


def hulld_base_config(
    *, root: Path, pod_logs: Path, cni_dir: Path, metrics_port: int, registries: str, runtime: str = ""
) -> str:
    """``registries``: its ``[[registries]]`` entries; ``runtime``: more lines of its ``[runtime]``."""
    return f"""# The node's hulld configuration without RuntimeProfile handlers (the node agent adds those).
[server]
socket = "{HULLD_SOCKET}"
metrics_address = "127.0.0.1:{metrics_port}"

[storage]
root = "{root}"
state = "{HULLD_STATE}"
pod_log_root = "{pod_logs}"  # the kubelet's podLogsDir

[network]
cni_conf_dir = "{cni_dir}"
cni_bin_dirs = ["/usr/lib/cni"]

[runtime]
default_handler = "runc"
{runtime}
{registries}
[handlers.runc]
runtime_path = "{shutil.which("runc")}"
"""


def cni_config(work_dir: Path, subnet: str = POD_SUBNET) -> str:
    """The node's pod network: a bridge, addresses from ``subnet`` (IPAM state under ``work_dir``)."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "kubehull-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(work_dir / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(pod_logs: Path, api: apiserver.KubeAPIServer, serving: Any) -> dict[str, Any]:
    """The kubelet on hulld's socket; its cgroup driver is the one hulld reports (KubeletCgroupDriverFromCRI)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{HULLD_SOCKET}",
        "failSwapOn": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(api.ca.cert_path)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving.cert),
        "tlsPrivateKeyFile": str(serving.key),
        "readOnlyPort": 0,
        "healthzPort": processes.free_port(),
        "clusterDomain": "cluster.local",
        "podLogsDir": str(pod_logs),
        "serializeImagePulls": False,
        # A test machine's disk may be fuller than a node's: evict only when it is really out of space.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
    }


def start_controllers(api: apiserver.KubeAPIServer, work_dir: Path, logs: Path, teardown: contextlib.ExitStack) -> None:
    """kube-controller-manager and kube-scheduler, on the API server's admin credentials."""
    pki_dir = work_dir / "pki"
    control_plane_flags = [
        f"--kubeconfig={api.kubeconfig}",
        f"--authentication-kubeconfig={api.kubeconfig}",
        f"--authorization-kubeconfig={api.kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
    ]
    controller_manager = processes.ManagedProcess(
        "kube-controller-manager",
        [
            toolchain.binary("kube-controller-manager"),
            *control_plane_flags,
            f"--secure-port={processes.free_port()}",
            f"--service-account-private-key-file={pki_dir / 'sa.key'}",
            f"--root-ca-file={api.ca.cert_path}",
            f"--cluster-signing-cert-file={api.ca.cert_path}",
            f"--cluster-signing-key-file={api.ca.key_path}",
            "--use-service-account-credentials=true",
            "--v=1",
        ],
        logs,
    )
    teardown.callback(controller_manager.stop)
    scheduler = processes.ManagedProcess(
        "kube-scheduler",
        [toolchain.binary("kube-scheduler"), *control_plane_flags, f"--secure-port={processes.free_port()}"],
        logs,
    )
    teardown.callback(scheduler.stop)


@contextlib.contextmanager
def run(work_dir: Path, logs: Path, *, timeout: float = 180) -> Iterator[LocalCluster]:
    """Bring the cluster up (the node Ready), yield it, and tear everything down."""
    if os.geteuid() != 0:
        raise processes.ProcessError("the local cluster needs root (it runs a kubelet and containers)")
    recover_interrupted_run()
    for path in NODE_PATHS:
        if path.exists() and any(path.iterdir()):
            raise processes.ProcessError(f"{path} is not empty: is this machine already a kubehull node?")
    if HULLD_PID_FILE.exists():
        raise processes.ProcessError(f"{HULLD_PID_FILE} exists: a hulld already runs here")
    node_ip = node_address()
    with contextlib.ExitStack() as teardown:
        RUN_MARK.parent.mkdir(parents=True, exist_ok=True)
        RUN_MARK.write_text(f"{work_dir}\n")
        teardown.callback(_cleanup_node, work_dir)
        store = etcd.start(work_dir, logs)
        teardown.callback(store.stop)
        api = apiserver.start(work_dir, logs, store.client_url, advertise_address=node_ip)
        teardown.callback(api.stop)
        start_controllers(api, work_dir, logs, teardown)
        served = registry.start(work_dir / "registry", logs)
        teardown.callback(served.stop)

        # The node, as its image would provision it: hulld's base config, then hulld itself.
        hulld_metrics = processes.free_port()
        HULLD_BASE_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        HULLD_BASE_CONFIG.write_text(
            hulld_base_config(
                root=work_dir / "hulld",
                pod_logs=work_dir / "pod-logs",
                cni_dir=work_dir / "cni",
                metrics_port=hulld_metrics,
                registries=LOOPBACK_REGISTRIES,
            )
        )
        HULLD_CONFIG.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        shutil.copyfile(HULLD_BASE_CONFIG, HULLD_CONFIG)
        (work_dir / "cni").mkdir(parents=True, exist_ok=True)
        (work_dir / "cni" / "10-kubehull.conflist").write_text(cni_config(work_dir))
        hulld = Hulld([sys.executable, "-m", "hulld", "--config", str(HULLD_CONFIG)], logs)
        hulld.start()
        teardown.callback(hulld.stop)
        teardown.callback(hulld.remove_all_pods)

        node_credentials = api.ca.issue(
            "kubelet-client", f"system:node:{NODE_NAME}", organizations=["system:nodes"], client=True
        )
        node_kubeconfig = work_dir / "kubelet.kubeconfig"
        apiserver.write_kubeconfig(
            node_kubeconfig, api.url, api.ca.cert_path, node_credentials, f"system:node:{NODE_NAME}"
        )
        serving = api.ca.issue("kubelet-serving", NODE_NAME, hosts=[node_ip, NODE_NAME], server=True)
        kubelet_config_file = work_dir / "kubelet.yaml"
        settings = kubelet_config(work_dir / "pod-logs", api, serving)
        settings["failCgroupV1"] = False  # this machine's cgroups are v1 (hybrid)
        kubelet_config_file.write_text(yaml.safe_dump(settings))
        kubelet = processes.ManagedProcess(
            "kubelet",
            [
                toolchain.binary("kubelet"),
                f"--config={kubelet_config_file}",
                f"--kubeconfig={node_kubeconfig}",
                f"--root-dir={work_dir / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={node_ip}",
                "--v=2",
            ],
            logs,
        )
        teardown.callback(kubelet.stop)
        proxy = processes.ManagedProcess(
            "kube-proxy",
            [
                toolchain.binary("kube-proxy"),
                f"--kubeconfig={api.kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_SUBNET}",
                f"--metrics-bind-address=127.0.0.1:{processes.free_port()}",
                f"--healthz-bind-address=127.0.0.1:{processes.free_port()}",
                "--conntrack-max-per-core=0",  # leave the machine's conntrack table size alone
            ],
            logs,
        )
        teardown.callback(_remove_proxy_rules)
        teardown.callback(proxy.stop)
        local = LocalCluster(
            api=api,
            registry=served,
            hulld=hulld,
            kubelet=kubelet,
            node_name=NODE_NAME,
            node_ip=node_ip,
            work_dir=work_dir,
            logs=logs,
        )
        kubelet.wait_ready(local.node_ready, timeout, f"registered node {NODE_NAME} Ready")
        yield local


def node_processes(work_dir: Path) -> dict[int, list[str]]:
    """The processes of the cluster run in ``work_dir`` outside its pods: the control plane and the kubelet name the
    work dir, hulld its config, conmon and the shims hulld's state directory."""
    marks = (str(work_dir), f"{HULLD_STATE}/", f"hulld --config {HULLD_CONFIG}")
    return {
        pid: arguments
        for pid, arguments in processes.machine_processes().items()
        if any(mark in " ".join(arguments) for mark in marks)
    }


def pod_processes() -> set[int]:
    """The live processes in the kubelet's pod cgroups (not the zombies a cgroup may still list)."""
    return host_cgroups.processes("kubepods") & processes.machine_processes().keys()


def recover_interrupted_run() -> None:
    """Clean up what a run stopped before its teardown left on the node, once nothing of it runs any more."""
    if not RUN_MARK.is_file():
        return
    work_dir = Path(RUN_MARK.read_text().strip())
    survivors = sorted(node_processes(work_dir).keys() | pod_processes())
    if survivors:
        raise processes.ProcessError(
            f"an earlier cluster run in {work_dir} was not torn down and still has processes ({survivors}): "
            "stop it (Ctrl-C) or kill them, then start again"
        )
    print(f"cleaning up after an earlier cluster run in {work_dir} that was not torn down", file=sys.stderr)
    _remove_proxy_rules()
    _cleanup_node(work_dir)


def _remove_proxy_rules() -> None:
    subprocess.run([toolchain.binary("kube-proxy"), "--cleanup"], capture_output=True, check=False)


def _cleanup_node(work_dir: Path) -> None:
    mounts.unmount_under(work_dir)
    mounts.unmount_under(HULLD_STATE)
    host_cgroups.remove_tree("kubepods")
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    for path in (HULLD_STATE, *NODE_PATHS):
        shutil.rmtree(path, ignore_errors=True)
