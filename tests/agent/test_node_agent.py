"""The node agent as a host process, end to end with the real API server (the test playing the operator: it
makes the node's NodeHandlers) and a real hulld."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kubehull_api.engines import Engine
from kubehull_api.nodehandler import FINALIZER
from kubehull_harness import processes, toolchain
from kubehull_harness.pytest_plugin import OCIRegistry
from kubehull_harness.waiting import wait_until
from tests.agent.conftest import AgentProcess, Cluster, handler_config
from tests.hulld.conftest import Hulld

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

STATUS_WRITES = "kubehull_agent_status_writes_total"


def served(hulld: Hulld) -> set[str]:
    """The handlers hulld serves now."""
    return {handler.get("name", "") for handler in json.loads(hulld.crictl("info").stdout)["runtimeHandlers"]}


def test_handlers_reach_hulld_and_readiness_comes_back(
    cluster: Cluster, hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, component_logs: Path
) -> None:
    hulld = hulld_with_network
    node = cluster.create_node("node", "hulld://0.1.0")
    probe_image = oci_registry.images["busybox"].reference
    agent = AgentProcess(cluster.server, node, hulld, probe_image, tmp_path, component_logs, ["--reprobe-interval=2"])
    try:
        runsc = str(toolchain.binary("runsc"))
        gvisor_config = handler_config("gvisor", Engine.GVISOR, runsc)
        runc = cluster.create_handler(node, handler_config("runc", Engine.RUNC, "/usr/sbin/runc"))
        gvisor = cluster.create_handler(node, gvisor_config)
        wait_until(lambda: cluster.ready(runc, gvisor), 120, "both handlers ready")
        status = cluster.status(gvisor)
        assert status["runtime"] == {"name": "hulld", "version": "0.1.0"}
        assert status["observedGeneration"] == 1
        assert status["configDigest"] == gvisor_config.runtime_digest()
        assert status["binaryVersion"].startswith("runsc version")
        assert status["lastTransitionTime"]
        assert "gvisor" in served(hulld)
        assert runsc in hulld.config_path.read_text()  # rendered into hulld's own configuration
        listed = processes.run(
            [toolchain.binary("kubectl"), f"--kubeconfig={cluster.server.kubeconfig}", "get", "nodehandler", gvisor]
        ).stdout
        assert listed.split("\n")[0].split() == ["NAME", "NODE", "HANDLER", "READY", "REASON", "AGE"]
        assert listed.split("\n")[1].split()[:4] == [gvisor, node, "gvisor", "true"]

        # Reprobes (every 2 s here) that find what the statuses say write nothing: the objects stay as they are.
        versions = {name: cluster.metadata(name)["resourceVersion"] for name in (runc, gvisor)}
        writes, probed = agent.metric(STATUS_WRITES, 'result="ok"'), agent.probes("gvisor")
        wait_until(lambda: agent.probes("gvisor") >= probed + 2, 60, "two more probe rounds")
        assert agent.metric(STATUS_WRITES, 'result="ok"') == writes
        for name, version in versions.items():
            assert cluster.metadata(name)["resourceVersion"] == version

        # Break gVisor: its binary is gone. Its status says so, about the new spec; runc's is not written again.
        cluster.patch(gvisor, {"spec": {"handler": {"path": "/nonexistent/runsc"}}})

        def broken() -> bool:
            status = cluster.status(gvisor)
            return bool(status["observedGeneration"] == 2 and status["reason"] == "BinaryNotFound")

        wait_until(broken, 60, "gvisor reported broken")
        status = cluster.status(gvisor)
        assert status["ready"] is False
        assert "/nonexistent/runsc does not exist" in status["message"]
        broken_config = gvisor_config.model_copy(update={"path": "/nonexistent/runsc"})
        assert status["configDigest"] == broken_config.runtime_digest()
        assert cluster.metadata(runc)["resourceVersion"] == versions[runc]
        assert runsc in hulld.config_path.read_text()  # hulld keeps the last good one

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

        # A round while hulld is down (here: restarting) fails; the statuses say so, and come back with hulld,
        # without any change of spec.
        hulld.stop()
        cluster.patch(gvisor, {"spec": {"handler": {"path": runsc}}})
        wait_until(
            lambda: not cluster.status(runc)["ready"] and cluster.status(gvisor)["observedGeneration"] == 3,
            60,
            "the handlers reported not ready with hulld down",
        )
        hulld.start()
        wait_until(lambda: cluster.ready(runc, gvisor), 60, "both handlers ready with hulld back")

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
        agent = AgentProcess(cluster.server, node, hulld, probe_image, tmp_path, component_logs)
        wait_until(
            lambda: leftover not in hulld.crictl("pods", "-q", private=True).stdout,
            60,
            "the leftover probe pod removed",
        )
        wait_until(lambda: "gvisor" in served(hulld), 60, "the new agent to have hulld reload")
        wait_until(lambda: agent.probes("runc") and agent.probes("gvisor"), 60, "both handlers probed ready again")
    finally:
        agent.stop()
    # SIGTERM stops the agent cleanly, and hulld goes on serving.
    assert agent.process.popen.returncode == 0
    assert "stopping; hulld keeps running" in agent.process.log_path.read_text()
    assert hulld.process is not None
    assert hulld.process.popen.poll() is None
    assert "hulld" in hulld.crictl("version").stdout


def test_a_deleted_node_handler_leaves_hulld_before_its_finalizer(
    cluster: Cluster, hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, component_logs: Path
) -> None:
    """Deleting a NodeHandler takes its handler out of hulld's configuration; only once hulld runs without it does
    the agent take its finalizer off (and only its own), so the object goes with the handler. A handler hulld's
    base configuration has (runc) stays in hulld; while hulld cannot reload, the finalizer stays."""
    hulld = hulld_with_network
    node = cluster.create_node("node", "hulld://0.1.0")
    probe_image = oci_registry.images["busybox"].reference
    # Rounds that could not release come again within 10 s.
    agent = AgentProcess(cluster.server, node, hulld, probe_image, tmp_path, component_logs, ["--reprobe-interval=10"])
    try:
        runsc = str(toolchain.binary("runsc"))
        keep = "kubehull.io/test-keep"
        gvisor = cluster.create_handler(node, handler_config("gvisor", Engine.GVISOR, runsc), keep)
        runc = cluster.create_handler(node, handler_config("runc", Engine.RUNC, "/usr/sbin/runc"))
        second = cluster.create_handler(node, handler_config("gvisor-2", Engine.GVISOR, runsc))
        wait_until(lambda: cluster.ready(gvisor, runc, second), 120, "the handlers ready")
        assert {"gvisor", "gvisor-2"} <= served(hulld)

        cluster.delete(gvisor)
        cluster.delete(runc)

        def released() -> bool:
            return bool(cluster.metadata(gvisor)["finalizers"] == [keep])

        wait_until(released, 60, "the agent's finalizer off gvisor's NodeHandler")
        assert "gvisor" not in served(hulld)  # hulld runs without it before its NodeHandler is let go
        assert "[handlers.gvisor]" not in hulld.config_path.read_text()
        wait_until(lambda: cluster.node_handler(runc) is None, 30, "runc's NodeHandler gone")
        assert "runc" in served(hulld)  # hulld's own handler, from its base configuration
        cluster.patch(gvisor, {"metadata": {"finalizers": None}})
        assert cluster.node_handler(gvisor) is None
        assert cluster.ready(second)

        # hulld down: the configuration without gvisor-2 cannot be reloaded, so its NodeHandler stays (and is
        # tried again); it goes once hulld runs without it.
        hulld.stop()
        cluster.delete(second)
        wait_until(lambda: "[handlers.gvisor-2]" not in hulld.config_path.read_text(), 30, "gvisor-2 rendered out")
        assert FINALIZER in cluster.metadata(second)["finalizers"]
        hulld.start()
        wait_until(lambda: cluster.node_handler(second) is None, 60, "gvisor-2's NodeHandler gone with hulld back")
        assert "gvisor-2" not in served(hulld)
    finally:
        agent.stop()


def test_a_node_whose_kubelet_uses_another_runtime_gets_no_handlers(
    cluster: Cluster, hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, component_logs: Path
) -> None:
    """On a node whose kubelet talks to a runtime kubehull does not configure (CRI-O here), hulld's handlers would
    never be asked for (pods would fail "no runtime for handler"): the agent says so for every handler instead of
    probing hulld. Nothing of kubehull's runs there, so a deleted NodeHandler goes at once."""
    hulld = hulld_with_network
    node = cluster.create_node("crio-node", "cri-o://1.34.2")
    hulld_config = hulld.config_path.read_text()
    probe_image = oci_registry.images["busybox"].reference
    agent = AgentProcess(cluster.server, node, hulld, probe_image, tmp_path, component_logs)
    try:
        runc = cluster.create_handler(node, handler_config("runc", Engine.RUNC, "/usr/sbin/runc"))

        def reported() -> dict[str, Any]:
            status = cluster.status(runc)
            assert status.get("reason") == "UnsupportedRuntime", status
            return status

        status = wait_until(reported, 60, "UnsupportedRuntime")
        assert status["ready"] is False
        assert status["message"] == (
            "this node's kubelet uses cri-o://1.34.2; kubehull's handlers need hulld or containerd 2.0 or later"
            " as the node's CRI runtime"
        )
        assert hulld.config_path.read_text() == hulld_config  # nothing rendered for a hulld the kubelet does not use
        cluster.delete(runc)
        wait_until(lambda: cluster.node_handler(runc) is None, 30, "the NodeHandler gone")
    finally:
        agent.stop()
