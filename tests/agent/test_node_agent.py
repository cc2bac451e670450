"""The node agent as a host process, end to end with the real API server, the operator and hulld."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from kubehull_harness import processes, toolchain
from kubehull_harness.pytest_plugin import OCIRegistry
from kubehull_harness.waiting import wait_until
from tests.agent.conftest import AgentProcess, kubelet_reports
from tests.hulld.conftest import Hulld
from tests.operator.conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.root, pytest.mark.slow]


def served(hulld: Hulld) -> set[str]:
    """The handlers hulld serves now."""
    return {handler.get("name", "") for handler in json.loads(hulld.crictl("info").stdout)["runtimeHandlers"]}


def wait_for_handlers_ready(cluster: Cluster, node: str, wanted: str, timeout: float) -> None:
    """Until the node's NodeRuntime says ``wanted`` handlers are ready; a timeout shows the status last seen."""

    def reached() -> bool:
        status = cluster.node_runtime(node)["status"]
        assert status["handlersReady"] == wanted, status
        return True

    wait_until(reached, timeout, f"{wanted} handlers ready")


def test_profiles_reach_hulld_and_readiness_comes_back(
    cluster: Cluster, hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, component_logs: Path
) -> None:
    hulld = hulld_with_network
    node = cluster.create_node("node")
    kubelet_reports(cluster, node, "hulld://0.1.0")
    probe_image = oci_registry.images["busybox"].reference
    agent = AgentProcess(cluster.server, node, hulld, probe_image, tmp_path, component_logs)
    try:
        runc = cluster.create_profile(
            "runc",
            {
                "handler": "runc",
                "runtime": {"engine": "runc", "path": "/usr/sbin/runc"},
                "rollout": {"maxUnavailable": "100%"},
            },
        )
        gvisor = cluster.create_profile(
            "gvisor",
            {
                "handler": "gvisor",
                "runtime": {"engine": "gvisor", "path": str(toolchain.binary("runsc"))},
                "rollout": {"maxUnavailable": "100%"},
            },
        )

        for profile in (runc, gvisor):

            def ready(profile: str = profile) -> bool:
                return cluster.condition(profile, "Ready").get("status") == "True"

            wait_until(ready, 120, f"{profile} Ready")
            assert cluster.profile(profile)["status"]["ready"] == "1/1"
        assert cluster.handler_labels(node) == {
            "handler.kubehull.io/runc": "true",
            "handler.kubehull.io/gvisor": "true",
        }
        status = cluster.node_runtime(node)["status"]
        assert status["runtime"] == {"name": "hulld", "version": "0.1.0", "ready": True}
        by_name = {handler["name"]: handler for handler in status["handlers"]}
        assert by_name["gvisor"]["ready"] is True
        assert by_name["gvisor"]["binaryVersion"].startswith("runsc version")
        assert by_name["gvisor"]["probeDurationSeconds"] > 0
        assert "reason" not in by_name["gvisor"]  # empty texts are left out, not stored with every write
        assert "gvisor" in hulld.config_path.read_text()  # rendered into hulld's own configuration
        assert status["handlersReady"] == "2/2"
        listed = processes.run(
            [toolchain.binary("kubectl"), f"--kubeconfig={cluster.server.kubeconfig}", "get", "noderuntime", node]
        ).stdout
        assert listed.split("\n")[0].split() == ["NAME", "RUNTIME", "RUNTIME-READY", "HANDLERS-READY", "AGE"]
        assert listed.split("\n")[1].split()[:4] == [node, "0.1.0", "true", "2/2"]

        # Break gVisor: its binary is gone. Its readiness, label and profile say so; runc is untouched.
        cluster.patch_profile(gvisor, {"spec": {"runtime": {"path": "/nonexistent/runsc"}}})
        wait_until(lambda: cluster.condition(gvisor, "Ready").get("reason") == "NodesFailed", 120, "NodesFailed")
        failure = cluster.profile(gvisor)["status"]["failures"][0]
        assert failure["node"] == node
        assert failure["reason"] == "BinaryNotFound"
        assert "/nonexistent/runsc does not exist" in failure["message"]
        wait_until(
            lambda: cluster.handler_labels(node) == {"handler.kubehull.io/runc": "true"}, 30, "the gvisor label to go"
        )
        assert cluster.condition(runc, "Ready")["status"] == "True"
        assert str(toolchain.binary("runsc")) in hulld.config_path.read_text()  # hulld keeps the last good one
        wait_for_handlers_ready(cluster, node, "1/2", 30)

        metrics = agent.metrics()
        assert 'kubehull_agent_handler_ready{handler="gvisor"} 0.0' in metrics
        assert 'kubehull_agent_handler_ready{handler="runc"} 1.0' in metrics
        assert "kubehull_agent_hulld_up 1.0" in metrics
        checked = subprocess.run(
            ["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        for endpoint in ("readyz", "healthz"):
            answer = urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/{endpoint}", timeout=5)
            assert answer.status == 200

        # A probe round while hulld is down (here: restarting) fails; the agent tries again within seconds, not
        # at its next reprobe interval (300 s), and the handlers come back without any change of spec.
        hulld.stop()
        cluster.patch_profile(gvisor, {"spec": {"runtime": {"path": str(toolchain.binary("runsc"))}}})
        wait_for_handlers_ready(cluster, node, "0/2", 60)
        hulld.start()
        wait_for_handlers_ready(cluster, node, "2/2", 60)

        # A reload that did not take (its signal lost, say while hulld started): hulld runs without gvisor while
        # its file already says what the agent would write. A new agent finds the file as it wants it, sees
        # that hulld does not serve it, and has hulld reload.
        agent.stop()
        rendered = hulld.config_path.read_text()
        hulld.config_path.write_text(re.sub(r"(?ms)^\[handlers\.gvisor\].*?(?=^\[|\Z)", "", rendered))
        assert hulld.process is not None
        hulld.process.popen.send_signal(signal.SIGHUP)
        wait_until(lambda: "gvisor" not in served(hulld), 20, "hulld to drop gvisor")
        hulld.config_path.write_text(rendered)  # no signal this time
        # And a probe pod that an agent killed mid-probe left behind: the new agent removes it.
        left = tmp_path / "left-probe.json"
        left.write_text(
            json.dumps({"metadata": {"name": "kubehull-probe-runc-left", "namespace": "kubehull-system", "uid": "x"}})
        )
        leftover = hulld.crictl("runp", "--runtime", "runc", str(left), private=True).stdout.split()[-1]
        assert leftover in hulld.crictl("pods", "-q", private=True).stdout.split()
        probed = {h["name"]: h["lastProbeTime"] for h in cluster.node_runtime(node)["status"]["handlers"]}
        time.sleep(1)  # probe times have seconds: the new agent's are later
        agent = AgentProcess(cluster.server, node, hulld, probe_image, tmp_path, component_logs)
        wait_until(
            lambda: leftover not in hulld.crictl("pods", "-q", private=True).stdout,
            60,
            "the leftover probe pod removed",
        )
        wait_until(lambda: "gvisor" in served(hulld), 60, "the new agent to have hulld reload")

        def probed_again() -> bool:
            handlers = cluster.node_runtime(node)["status"]["handlers"]
            return all(h["ready"] and h["lastProbeTime"] > probed[h["name"]] for h in handlers)

        wait_until(probed_again, 60, "both handlers probed ready by the new agent")
    finally:
        agent.stop()
    # SIGTERM stops the agent cleanly, and hulld goes on serving.
    assert agent.process.popen.returncode == 0
    assert "stopping; hulld keeps running" in agent.process.log_path.read_text()
    assert hulld.process is not None
    assert hulld.process.popen.poll() is None
    assert "hulld" in hulld.crictl("version").stdout


def test_a_node_whose_kubelet_uses_another_runtime_gets_no_handlers(
    cluster: Cluster, hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, component_logs: Path
) -> None:
    """On a node whose kubelet talks to a runtime kubehull does not configure (CRI-O here), hulld's handlers would
    never be asked for (pods would fail "no runtime for handler"): the agent says so for every handler instead of
    probing hulld, and the node gets no handler label."""
    hulld = hulld_with_network
    node = cluster.create_node("crio-node")
    kubelet_reports(cluster, node, "cri-o://1.34.2")
    hulld_config = hulld.config_path.read_text()
    agent = AgentProcess(
        cluster.server, node, hulld, oci_registry.images["busybox"].reference, tmp_path, component_logs
    )
    try:
        runc = cluster.create_profile(
            "runc",
            {"handler": "runc", "runtime": {"engine": "runc", "path": "/usr/sbin/runc"}},
        )
        wait_until(lambda: cluster.condition(runc, "Ready").get("reason") == "NodesFailed", 120, "NodesFailed")
        failure = cluster.profile(runc)["status"]["failures"][0]
        assert (failure["node"], failure["reason"]) == (node, "UnsupportedRuntime")
        assert failure["message"] == (
            "this node's kubelet uses cri-o://1.34.2; kubehull's handlers need hulld or containerd 2.0 or later"
            " as the node's CRI runtime"
        )
        status = cluster.node_runtime(node)["status"]
        assert status["handlersReady"] == "0/1"
        assert cluster.handler_labels(node) == {}
        assert hulld.config_path.read_text() == hulld_config  # nothing rendered for a hulld the kubelet does not use
    finally:
        agent.stop()
