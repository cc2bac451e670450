"""The node agent on a node that keeps containerd as its CRI: the real API server and operator, and a real
containerd 2.4 (the toolchain's) kept running by a supervising loop, as systemd keeps a node's — the agent's
restart command stops it, the loop starts it again and counts the starts.

The agent writes one drop-in that containerd's own configuration imports (a runc handler, then a gVisor one
through gVisor's shim), restarts containerd only when it changed, probes each handler with a real pod through
containerd's CRI, takes a removed profile's handler out, and removes the drop-in when uninstalled. A pod
running all along keeps running through every restart.
"""

from __future__ import annotations

import json
import os
import signal
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubehull_agent import containerd
from kubehull_api.engines import Engine, RuntimeType
from kubehull_api.noderuntime import HandlerConfig
from kubehull_harness import containerd as harness_containerd
from kubehull_harness import processes, shims, toolchain
from kubehull_harness.pytest_plugin import OCIRegistry
from kubehull_harness.waiting import wait_until
from tests.agent.conftest import AgentProcess, kubelet_reports
from tests.operator.conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

CNI_CONFLIST = """{"cniVersion": "0.4.0", "name": "containerd-test", "plugins": [
  {"type": "bridge", "bridge": "ctrdtest0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.236.0.0/24"}]],
            "dataDir": "/run/containerd-test-ipam"}}]}"""


class Containerd:
    """containerd 2.4 with the configuration an admin gave it (importing ``conf.d/*.toml``), supervised."""

    def __init__(self, work: Path, registry_host: str, logs: Path) -> None:
        self.work = work
        self.socket = work / "containerd.sock"
        self.confd = work / "conf.d"
        self.confd.mkdir(parents=True)
        (work / "cni").mkdir()
        (work / "cni" / "10-test.conflist").write_text(CNI_CONFLIST)
        self.config = harness_containerd.write_config(work, registry_host, work / "cni", imports=f"{self.confd}/*.toml")
        self.starts = work / "starts"
        self.pid_file = work / "containerd.pid"
        self.stop_file = work / "stop"
        loop = (
            f"while [ ! -e {self.stop_file} ]; do {toolchain.binary('containerd')} --config {self.config} &"
            f" echo $! > {self.pid_file}; echo started >> {self.starts}; wait $!; done"
        )
        # The shims containerd starts are the toolchain's, found on its PATH as on a node.
        path = f"{toolchain.binary('containerd').parent}:{os.environ['PATH']}"
        self.process = processes.ManagedProcess(
            "containerd-2.4", ["sh", "-c", loop], logs, env={**os.environ, "PATH": path}
        )
        self.restart = work / "restart-containerd"
        self.restart.write_text(
            "#!/bin/sh\n"
            f"old=$(cat {self.pid_file}); kill -TERM $old\n"
            f'while kill -0 $old 2>/dev/null || [ "$(cat {self.pid_file})" = $old ]; do sleep 0.1; done\n'
        )
        self.restart.chmod(0o755)
        wait_until(self.answers, 60, "containerd to answer")

    def crictl(self, *args: str) -> str:
        endpoint = f"unix://{self.socket}"
        command = [str(toolchain.binary("crictl")), f"--runtime-endpoint={endpoint}", f"--image-endpoint={endpoint}"]
        return processes.run([*command, *args]).stdout

    def answers(self) -> bool:
        return bool(self.crictl("version"))

    def start_count(self) -> int:
        return len(self.starts.read_text().split())

    def stop(self) -> None:
        for pod in self.crictl("pods", "-q").split():
            self.crictl("rmp", "-f", pod)
        self.stop_file.touch()
        os.kill(int(self.pid_file.read_text()), 15)
        self.process.stop()


@pytest.fixture
def containerd_node(tmp_path: Path, oci_registry: OCIRegistry, component_logs: Path) -> Iterator[Containerd]:
    running = Containerd(tmp_path / "containerd", oci_registry.host, component_logs)
    yield running
    running.stop()


def start_agent(
    cluster: Cluster, node: str, runtime: Containerd, probe_image: str, work: Path, logs: Path
) -> AgentProcess:
    options = [
        f"--containerd-socket={runtime.socket}",
        f"--containerd-dropin={runtime.confd / 'kubehull.toml'}",
        f"--containerd-restart={runtime.restart}",
        f"--install-lock={work / 'install.lock'}",
        "--reprobe-interval=5",
    ]
    return AgentProcess(cluster.server, node, None, probe_image, work, logs, options)


def runc_profile(cluster: Cluster, name: str) -> str:
    spec = {
        "handler": name,
        "runtime": {"engine": "runc", "path": "/usr/sbin/runc"},
        "rollout": {"maxUnavailable": "100%"},
    }
    return cluster.create_profile(name, spec)


def ready(cluster: Cluster, profile: str) -> bool:
    return cluster.condition(profile, "Ready").get("status") == "True"


def gvisor_install(directory: Path) -> Path:
    """gVisor as a node has it: runsc and its containerd shim in one directory (the shim with the harness's
    ``start``, which this machine's missing CAP_SYS_RESOURCE needs: shims.py). The runsc path."""
    shims.runsc_shim(directory)
    (directory / "runsc").symlink_to(toolchain.binary("runsc"))
    return directory / "runsc"


def run_workload(runtime: Containerd, image: str, work: Path, handler: str = "") -> str:
    """A pod with a long-running container under ``handler`` (containerd's default runtime if none); its
    container's ID."""
    work.mkdir(parents=True, exist_ok=True)
    pod_config = work / "pod.json"
    metadata = {"name": f"workload{handler}", "namespace": "default", "uid": f"workload{handler}"}
    pod_config.write_text(json.dumps({"metadata": metadata}))
    container_config = work / "container.json"
    container_config.write_text(
        json.dumps({"metadata": {"name": "main"}, "image": {"image": image}, "command": ["sleep", "3600"]})
    )
    pod = runtime.crictl("runp", *([f"--runtime={handler}"] if handler else []), str(pod_config)).strip()
    container = runtime.crictl("create", "--with-pull", pod, str(container_config), str(pod_config)).strip()
    runtime.crictl("start", container)
    return container


def running(runtime: Containerd, container: str) -> bool:
    status = json.loads(runtime.crictl("inspect", container))["status"]
    return bool(status["state"] == "CONTAINER_RUNNING")


def test_the_agent_configures_containerd_with_a_dropin(
    cluster: Cluster, containerd_node: Containerd, oci_registry: OCIRegistry, tmp_path: Path, component_logs: Path
) -> None:
    runtime = containerd_node
    node = cluster.create_node("ctrd")
    kubelet_reports(cluster, node, "containerd://v2.4.2")
    busybox = oci_registry.images["busybox"].reference
    workload = run_workload(runtime, busybox, tmp_path)
    dropin = runtime.confd / "kubehull.toml"
    agent = start_agent(cluster, node, runtime, busybox, tmp_path, component_logs)
    try:
        first = runc_profile(cluster, "ctrd-runc")
        wait_until(lambda: ready(cluster, first), 120, f"{first} Ready")
        status = cluster.node_runtime(node)["status"]
        assert status["runtime"]["name"] == "containerd"
        assert status["handlersReady"] == "1/1"
        assert cluster.handler_labels(node) == {"handler.kubehull.io/ctrd-runc": "true"}
        runtimes = containerd.runtimes_in(dropin.read_text())
        assert runtimes["ctrd-runc"]["options"]["BinaryName"] == "/usr/sbin/runc"
        assert runtime.start_count() == 2  # the one restart the new drop-in needed

        # A gVisor handler: one more restart; the pod running all along is the same container, still running.
        second = cluster.create_profile(
            "ctrd-gvisor",
            {
                "handler": "ctrd-gvisor",
                "runtime": {"engine": "gvisor", "path": str(gvisor_install(tmp_path / "gvisor"))},
                "rollout": {"maxUnavailable": "100%"},
            },
        )
        wait_until(lambda: ready(cluster, second), 120, f"{second} Ready")
        runtimes = containerd.runtimes_in(dropin.read_text())
        assert set(runtimes) == {"ctrd-runc", "ctrd-gvisor"}
        assert runtimes["ctrd-gvisor"]["runtime_type"] == "io.containerd.runsc.v1"
        runsc_config = Path(runtimes["ctrd-gvisor"]["options"]["ConfigPath"])
        assert runsc_config.parent == runtime.confd / "kubehull.d"  # not imported as a drop-in itself
        assert tomllib.loads(runsc_config.read_text())["binary_name"] == str(tmp_path / "gvisor" / "runsc")
        assert runtime.start_count() == 3
        assert running(runtime, workload)
        assert json.loads(runtime.crictl("inspect", workload))["status"]["id"] == workload
        # A pod of the handler runs under gVisor's kernel.
        sandboxed = run_workload(runtime, busybox, tmp_path / "sandboxed", handler="ctrd-gvisor")
        assert "gVisor" in runtime.crictl("exec", sandboxed, "dmesg")

        # Reprobes every 5 s render the same drop-in: containerd is not restarted again.
        probed = cluster.node_runtime(node)["status"]["handlers"][0]["lastProbeTime"]
        wait_until(
            lambda: cluster.node_runtime(node)["status"]["handlers"][0]["lastProbeTime"] != probed,
            60,
            "a reprobe",
        )
        assert runtime.start_count() == 3

        # containerd frozen through reprobes (RuntimeConfig times out): the agent waits for its answer instead of
        # guessing its cgroup driver; the drop-in and containerd stay as they are.
        text = dropin.read_text()
        frozen = int(runtime.pid_file.read_text())
        os.kill(frozen, signal.SIGSTOP)
        try:
            time.sleep(12)  # reprobes come every 5 s
        finally:
            os.kill(frozen, signal.SIGCONT)
        wait_until(lambda: ready(cluster, second), 120, f"{second} Ready after the freeze")
        assert dropin.read_text() == text
        assert runtime.start_count() == 3

        # gVisor's runsc gone for a while: the handler is reported, its running entry stays in the drop-in with
        # its gVisor configuration (a broken desired state never replaces a running one), and nothing restarts.
        runsc = tmp_path / "gvisor" / "runsc"
        runsc.rename(runsc.with_name("runsc.away"))
        try:
            wait_until(lambda: handler_reason(cluster, node, "ctrd-gvisor") == "BinaryNotFound", 60, "runsc missed")
            assert dropin.read_text() == text
            assert runsc_config.exists()
        finally:
            runsc.with_name("runsc.away").rename(runsc)
        wait_until(lambda: ready(cluster, second), 120, f"{second} Ready with runsc back")
        assert runtime.start_count() == 3

        # A profile deleted: its handler leaves the drop-in and containerd (one restart), its label and its
        # gVisor configuration go. (Its pod keeps running: containerd recorded its runtime when it was made.)
        cluster.delete_profile(second)
        wait_until(lambda: set(containerd.runtimes_in(dropin.read_text())) == {"ctrd-runc"}, 120, "ctrd-gvisor gone")
        wait_until(
            lambda: cluster.handler_labels(node) == {"handler.kubehull.io/ctrd-runc": "true"}, 60, "its label to go"
        )
        wait_until(lambda: runtime.start_count() == 4, 60, "containerd restarted without ctrd-gvisor")
        # "started" is counted as containerd is launched, before it serves.
        wait_until(lambda: "ctrd-gvisor" not in served_handlers(runtime), 60, "containerd serving without it")
        assert not (runtime.confd / "kubehull.d").exists()
        assert running(runtime, sandboxed)
    finally:
        agent.stop()

    # Uninstalled: the drop-in goes, containerd restarts once without it; the pod running all along still runs.
    uninstall = [
        *agent.process.argv[:3],
        "--uninstall",
        f"--install-root={tmp_path / 'opt'}",
        f"--hulld-socket={tmp_path / 'none' / 'hulld.sock'}",
        f"--hulld-pid-file={tmp_path / 'none' / 'hulld.pid'}",
        *(
            option
            for option in agent.process.argv
            if option.startswith(("--containerd-", "--install-lock", "--hulld-"))
        ),
    ]
    processes.run(uninstall)
    assert not dropin.exists()
    assert runtime.start_count() == 5
    wait_until(lambda: "ctrd-runc" not in served_handlers(runtime), 60, "containerd serving without ctrd-runc")
    assert running(runtime, workload)


def handler_reason(cluster: Cluster, node: str, name: str) -> str:
    handlers = cluster.node_runtime(node).get("status", {}).get("handlers", [])
    return next((str(h.get("reason", "")) for h in handlers if h["name"] == name), "")


def served_handlers(runtime: Containerd) -> set[str]:
    return {handler.get("name", "") for handler in json.loads(runtime.crictl("info")).get("runtimeHandlers", [])}


def test_a_containerd_1_node_is_unsupported(
    cluster: Cluster, containerd_node: Containerd, oci_registry: OCIRegistry, tmp_path: Path, component_logs: Path
) -> None:
    """containerd 1.x replaces whole plugin sections with an imported file's: a drop-in would wipe the node's CRI
    settings. Its handlers are reported, nothing is written, nothing restarted."""
    node = cluster.create_node("ctrd1")
    kubelet_reports(cluster, node, "containerd://1.7.27")
    busybox = oci_registry.images["busybox"].reference
    agent = start_agent(cluster, node, containerd_node, busybox, tmp_path, component_logs)
    try:
        profile = runc_profile(cluster, "ctrd1-runc")

        def reported() -> dict[str, Any]:
            handlers = cluster.node_runtime(node)["status"]["handlers"]
            assert handlers, handlers
            assert handlers[0]["reason"] == "UnsupportedRuntime", handlers
            return dict(handlers[0])

        handler = wait_until(reported, 120, "UnsupportedRuntime")
        assert "containerd://1.7.27" in handler["message"]
        assert "containerd 2.0 or later" in handler["message"]
        assert not (containerd_node.confd / "kubehull.toml").exists()
        assert containerd_node.start_count() == 1
        cluster.delete_profile(profile)
    finally:
        agent.stop()


def handler(name: str, engine: Engine, path: str, **settings: Any) -> HandlerConfig:
    runtime_type = RuntimeType.VM if engine == Engine.KATA else RuntimeType.OCI
    return HandlerConfig(
        name=name, profile=name, profile_generation=1, engine=engine, runtime_type=runtime_type, path=path, **settings
    )


def test_each_engine_renders_as_containerd_reads_it(tmp_path: Path) -> None:
    """The drop-in for runc, gVisor and Kata handlers, merged by containerd itself (``config dump``): each
    handler's shim, binary and options where containerd's CRI plugin reads them, beside the admin's settings."""
    dropin = tmp_path / "conf.d" / "kubehull.toml"
    handlers = [
        handler("runc", Engine.RUNC, "/usr/sbin/runc", privileged_without_host_devices=True),
        handler("gvisor", Engine.GVISOR, "/opt/gvisor/runsc", options={"platform": "systrap"}),
        handler("kata", Engine.KATA, "/opt/kata/containerd-shim-kata-v2", config_path="/opt/kata/kata.toml"),
        handler("broken", Engine.RUNC, "/nonexistent/runc"),
    ]
    text = containerd.render(handlers, {"broken": "missing"}, {}, dropin, systemd_cgroup=True)
    dropin.parent.mkdir()
    dropin.write_text(text)
    config = tmp_path / "config.toml"
    runtime = 'plugins."io.containerd.cri.v1.runtime"'
    config.write_text(
        f'version = 3\nimports = ["{dropin.parent}/*.toml"]\n[{runtime}.containerd]\n  default_runtime_name = "runc"\n'
    )
    dumped = processes.run([toolchain.binary("containerd"), "--config", str(config), "config", "dump"]).stdout
    merged = tomllib.loads(dumped)["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]
    assert merged["default_runtime_name"] == "runc"  # the admin's, kept
    runtimes = merged["runtimes"]
    assert "broken" not in runtimes
    assert runtimes["runc"]["runtime_type"] == "io.containerd.runc.v2"
    assert runtimes["runc"]["options"]["BinaryName"] == "/usr/sbin/runc"
    assert runtimes["runc"]["options"]["SystemdCgroup"] is True
    assert runtimes["runc"]["privileged_without_host_devices"] is True
    assert runtimes["gvisor"]["runtime_type"] == "io.containerd.runsc.v1"
    assert runtimes["gvisor"]["runtime_path"] == "/opt/gvisor/containerd-shim-runsc-v1"
    gvisor_config = runtimes["gvisor"]["options"]["ConfigPath"]
    assert gvisor_config == containerd.runsc_config_path(dropin, "gvisor")
    assert tomllib.loads(containerd.runsc_config(handlers[1], True)) == {
        "binary_name": "/opt/gvisor/runsc",
        "runsc_config": {"platform": "systrap", "systemd-cgroup": "true"},
    }
    assert runtimes["kata"]["runtime_type"] == "io.containerd.kata.v2"
    assert runtimes["kata"]["runtime_path"] == "/opt/kata/containerd-shim-kata-v2"
    assert runtimes["kata"]["options"] == {"ConfigPath": "/opt/kata/kata.toml"}
