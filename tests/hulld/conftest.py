"""hulld tests: a real hulld process on a private socket and root, pulling from the local registry."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc

from kubehull_harness import host_cgroups, images, mounts, processes, shims, toolchain
from kubehull_harness.pytest_plugin import OCIRegistry

# A bridge network for the test's pods (their own network namespaces; nothing leaves this machine).
CNI_CONFLIST = """{"cniVersion": "0.4.0", "name": "hulld-test", "plugins": [
  {"type": "bridge", "bridge": "hulldtest0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.231.0.0/24"}]],
            "dataDir": "/run/hulld-test-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}"""


class Hulld:
    """One hulld process with its own config, socket, state and metrics port."""

    counter = itertools.count(1)

    def __init__(
        self,
        work_dir: Path,
        log_dir: Path,
        registry_host: str,
        *,
        network: bool = False,
        pod_log_root: Path | None = None,
        extra_config: str = "",
    ) -> None:
        self.work_dir = work_dir
        self.log_dir = log_dir
        self.socket = work_dir / "run" / "hulld.sock"
        self.private_socket = work_dir / "run" / "private.sock"
        self.root = work_dir / "root"
        self.pod_log_root = pod_log_root or work_dir / "logs"
        """Pods' log directories must be under it (the kubelet's /var/log/pods on a node)."""
        self.metrics_port = processes.free_port()
        self.config_path = work_dir / "config.toml"
        # critest's images, under their upstream names, come from the local registry as their mirror.
        mirrors = images.critest_mirrors(registry_host)
        runsc_shim, runsc_shim_config = shims.runsc_shim(work_dir / "runsc-shim")
        self.write_config(f"""
[server]
socket = "{self.socket}"
private_socket = "{self.private_socket}"
metrics_address = "127.0.0.1:{self.metrics_port}"

[storage]
root = "{self.root}"
state = "{work_dir / "state"}"
pod_log_root = "{self.pod_log_root}"

[network]
cni_conf_dir = "{work_dir / "cni"}"
cni_bin_dirs = ["/usr/lib/cni"]

[[registries]]
prefix = "127.0.0.1"  # every test registry on this machine, whatever its port
insecure = true
{mirrors}
[runtime]
default_handler = "runc"

[handlers.runc]
runtime_path = "/usr/sbin/runc"

[handlers.runsc]
runtime_path = "{toolchain.binary("runsc")}"
sandbox_per_pod = true

[handlers.shim-runc]
runtime_type = "vm"
runtime_path = "{shims.RUNC_SHIM}"

[handlers.shim-runc-2-4]
runtime_type = "vm"
runtime_path = "{toolchain.binary("containerd-shim-runc-v2")}"

[handlers.shim-runsc]
runtime_type = "vm"
runtime_path = "{runsc_shim}"
config_path = "{runsc_shim_config}"
sandbox_per_pod = true
{extra_config}""")
        if network:
            (work_dir / "cni").mkdir()
            (work_dir / "cni" / "10-test.conflist").write_text(CNI_CONFLIST)
        self.process: processes.ManagedProcess | None = None
        self.start()

    def write_config(self, text: str) -> None:
        self.config_path.write_text(text)

    def start(self, *, wait_recovered: bool = True) -> None:
        """Start hulld; wait until it serves (and, unless told otherwise, has recovered its state)."""
        argv = [sys.executable, "-m", "hulld", "--config", str(self.config_path)]
        self.process = processes.ManagedProcess(f"hulld-{next(self.counter)}", argv, self.log_dir)
        if wait_recovered:
            self.process.wait_ready(self.recovered, 30, "serving its socket, its state recovered")
        else:
            self.process.wait_ready(self.socket.exists, 30, "serving its socket")

    def recovered(self) -> bool:
        """Whether hulld answers and is done recovering its state (until then it serves Version and Status)."""
        if not self.socket.exists():
            return False
        status = self.runtime().Status(cri.StatusRequest(), timeout=5).status
        return all(condition.reason != "Recovering" for condition in status.conditions)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def tear_down(self) -> list[str]:
        """After the test: hulld stopped, nothing of it left running or mounted. Returns the command lines of
        what its pods left running (shims, sandboxes), which are killed."""
        self.stop()
        # A shim handler's event recorder outlives hulld on purpose, and ends once its socket is removed.
        for address in (self.work_dir / "state" / "shim-events").glob("*.sock"):
            address.unlink()
        leftovers = []
        for pid, arguments in processes.machine_processes().items():
            command_line = " ".join(arguments)
            if str(self.work_dir) in command_line and "hulld.runtimes.shim.recorder" not in command_line:
                leftovers.append(command_line)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.unmount_everything()
        return leftovers

    def unmount_everything(self) -> None:
        """After the test: hulld keeps its namespace directory mounted (a node needs it), runsc may leave its
        own mounts; none of it may outlive the test's directory."""
        mounts.unmount_under(self.work_dir)

    @property
    def log(self) -> str:
        assert self.process is not None
        return self.process.log_path.read_text(errors="replace")

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix://{self.socket}")

    def runtime(self) -> Any:
        return api_pb2_grpc.RuntimeServiceStub(self.channel())

    def private_runtime(self) -> Any:
        """The RuntimeService on the private (node agent's) socket."""
        return api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel(f"unix://{self.private_socket}"))

    def images(self) -> Any:
        return api_pb2_grpc.ImageServiceStub(self.channel())

    def crictl_argv(self, *, private: bool = False) -> list[str]:
        """crictl on the kubelet's socket, or on the private one (the node agent's), without a subcommand."""
        endpoint = f"unix://{self.private_socket if private else self.socket}"
        return [
            str(toolchain.binary("crictl")),
            f"--runtime-endpoint={endpoint}",
            f"--image-endpoint={endpoint}",
            "--timeout=60s",
        ]

    def crictl(self, *args: str, check: bool = True, private: bool = False) -> subprocess.CompletedProcess[str]:
        """crictl on the kubelet's socket, or on the private one (the node agent's)."""
        result = subprocess.run(
            [*self.crictl_argv(private=private), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"crictl {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
            text: str = answer.read().decode()
            return text


def pod_cgroups() -> set[Path]:
    """hulld's own pod cgroups (of pods without a cgroup parent), in every hierarchy."""
    return host_cgroups.children("kubehull")


def pod_network_rules() -> set[str]:
    """The NAT rules the CNI plugins keep for pods of the test network (the bridge plugin's masquerade chain,
    one per pod, which its DEL removes)."""
    rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True).stdout
    return {rule for rule in rules.splitlines() if 'name: \\"hulld-test\\"' in rule}


@pytest.fixture
def hulld_with_network(tmp_path: Path, component_logs: Path, oci_registry: OCIRegistry) -> Iterator[Hulld]:
    cgroups_before, rules_before = pod_cgroups(), pod_network_rules()
    running = Hulld(tmp_path, component_logs, oci_registry.host, network=True)
    yield running
    for pod in running.crictl("pods", "-q", check=False).stdout.split():
        running.crictl("rmp", "-f", pod, check=False)
    assert running.tear_down() == [], "processes of removed pods were left running"
    assert pod_cgroups() - cgroups_before == set(), "removed pods left their cgroups"
    assert pod_network_rules() - rules_before == set(), "removed pods left their CNI rules"


@pytest.fixture
def hulld(tmp_path: Path, component_logs: Path, oci_registry: OCIRegistry) -> Iterator[Hulld]:
    running = Hulld(tmp_path, component_logs, oci_registry.host)
    yield running
    assert running.tear_down() == [], "processes of removed pods were left running"
