"""Rollouts honour maxUnavailable, survive an operator crash, and two replicas never act at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kubehull_harness import rollouts
from kubehull_harness.apiserver import KubeAPIServer
from kubehull_harness.operators import OperatorProcess
from kubehull_harness.waiting import wait_until
from tests.operator.conftest import FAST_LEASE, GROUP, VERSION, Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.beside]


class SimulatedAgents:
    """Plays every test node's agent (reporting its handlers ready a while after its spec changes) and watches
    the rollout: after each consistent list of NodeRuntimes it counts the nodes that carry the profile's handler
    but have not reported it ready — the rollout's unavailable nodes."""

    def __init__(self, cluster: Cluster, handler: str, *, delay: float = 0.6, paused: set[str] | None = None) -> None:
        self.cluster = cluster
        self.handler = handler
        self.delay = delay
        self.paused = paused if paused is not None else set()
        self.max_unavailable = 0
        self.label_seen: dict[str, list[bool]] = {}
        self._lagging_since: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self._round()
            except Exception as error:  # an API hiccup must not silently end the simulation
                print(f"simulated agents: {error!r}")

    def _round(self) -> None:
        listed = self.cluster.custom.list_cluster_custom_object(GROUP, VERSION, "noderuntimes")["items"]
        for item in listed:
            name = item["metadata"]["name"]
            if name not in self.cluster.nodes:
                continue
            spec = {entry["name"] for entry in item["spec"].get("handlers", [])}
            current = (item.get("status") or {}).get("observedGeneration") == item["metadata"]["generation"]
            if not current and name not in self.paused:
                since = self._lagging_since.setdefault(name, time.monotonic())
                if time.monotonic() - since >= self.delay:
                    # On the listed spec: if it changed since, this report is stale and the next round reports
                    # again, as an agent that applies one spec at a time would.
                    self.cluster.report(name, dict.fromkeys(spec, True), read=item)
                    del self._lagging_since[name]
        self.max_unavailable = max(self.max_unavailable, rollouts.unavailable(listed, self.handler, self.cluster.nodes))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_rollout_never_exceeds_max_unavailable(cluster: Cluster) -> None:
    nodes = [cluster.create_node(f"n{i}") for i in range(6)]
    agents = SimulatedAgents(cluster, "gvisor")
    try:
        profile = cluster.create_profile(
            "gv", {"handler": "gvisor", "runtime": {"engine": "gvisor"}, "rollout": {"maxUnavailable": 2}}
        )
        wait_until(lambda: cluster.profile(profile)["status"]["ready"] == "6/6", 60, "all 6 nodes ready")
        first_rollout = agents.max_unavailable
        # A change rolls out the same way, as a percentage: 34% of 6 nodes rounds up to 3.
        cluster.patch_profile(
            profile, {"spec": {"runtime": {"options": {"platform": "kvm"}}, "rollout": {"maxUnavailable": "34%"}}}
        )
        agents.max_unavailable = 0
        wait_until(
            lambda: all(cluster.handlers(node)["gvisor"].options == {"platform": "kvm"} for node in nodes),
            60,
            "the change on all nodes",
        )
        wait_until(lambda: cluster.condition(profile, "Ready").get("status") == "True", 30, "Ready again")
    finally:
        agents.stop()
    assert first_rollout == 2  # never more, and the budget was used
    assert agents.max_unavailable == 3
    assert all(cluster.handler_labels(node) == {"handler.kubehull.io/gvisor": "true"} for node in nodes)


def test_failing_nodes_stop_the_rollout(cluster: Cluster) -> None:
    nodes = [cluster.create_node(f"n{i}") for i in range(4)]
    profile = cluster.create_profile("gv", {"handler": "gvisor", "runtime": {"engine": "gvisor"}})
    first = wait_until(lambda: [node for node in nodes if cluster.handler(node, "gvisor")], what="the first node")
    assert len(first) == 1  # maxUnavailable defaults to 1
    cluster.report(first[0], {"gvisor": "ProbeFailed"})
    wait_until(lambda: cluster.condition(profile, "Degraded").get("status") == "True", what="Degraded")
    time.sleep(1.5)  # give the operator every chance to (wrongly) go on
    assert [node for node in nodes if cluster.handler(node, "gvisor")] == first
    assert cluster.profile(profile)["status"]["nodes"] == {"desired": 4, "ready": 0, "updating": 3, "failed": 1}


def test_operator_crash_in_the_middle_of_a_rollout_converges(cluster: Cluster, operator: OperatorProcess) -> None:
    nodes = [cluster.create_node(f"n{i}") for i in range(4)]
    paused = set(nodes)  # the agents hold back until told
    agents = SimulatedAgents(cluster, "runc", delay=0.2, paused=paused)
    try:
        profile = cluster.create_profile("rc", {"handler": "runc", "runtime": {"engine": "runc"}})
        wait_until(lambda: cluster.handler(nodes[0], "runc"), what="the first node's turn")
        paused.discard(nodes[0])
        wait_until(lambda: cluster.handler_labels(nodes[0]), what="the first node's label")
        wait_until(lambda: cluster.handler(nodes[1], "runc"), what="the second node's turn")

        operator.kill()  # mid-rollout: no lease release, nothing flushed
        paused.discard(nodes[1])  # the second node's agent reports while no operator runs
        wait_until(
            lambda: (cluster.node_runtime(nodes[1]).get("status") or {}).get("observedGeneration"), what="the report"
        )
        watched = {node: [] for node in nodes}  # type: dict[str, list[dict[str, str]]]
        operator.start()
        paused.clear()
        deadline = time.monotonic() + 60
        while (cluster.profile(profile).get("status") or {}).get("ready") != "4/4":
            assert time.monotonic() < deadline, cluster.profile(profile)["status"]
            for node in nodes:
                watched[node].append(cluster.handler_labels(node))
            time.sleep(0.1)
    finally:
        agents.stop()
    assert agents.max_unavailable == 1
    # The restarted operator never took the first node's label away while it caught up.
    assert all(labels == {"handler.kubehull.io/runc": "true"} for labels in watched[nodes[0]])
    assert all(cluster.handler_labels(node) == {"handler.kubehull.io/runc": "true"} for node in nodes)


def test_two_replicas_one_leader(
    cluster: Cluster, operator: OperatorProcess, kubehull_crds: KubeAPIServer, component_logs: Path
) -> None:
    wait_until(lambda: "kubehull_operator_leader 1.0" in operator.metrics(), what="the first replica to lead")
    standby = OperatorProcess(kubehull_crds.kubeconfig, component_logs, *FAST_LEASE)
    try:
        wait_until(lambda: "waiting to lead" in standby.log, what="the standby to wait")
        node = cluster.create_node("n0")
        first = cluster.create_profile("one", {"handler": "runc", "runtime": {"engine": "runc"}})
        wait_until(lambda: cluster.handler(node, "runc"), what="the leader to act")
        assert "kubehull_operator_leader 0.0" in standby.metrics()
        assert "kubehull_operator_api_writes_total{" not in standby.metrics()  # it wrote nothing at all

        operator.kill()
        wait_until(lambda: "kubehull_operator_leader 1.0" in standby.metrics(), 30, "the standby to take over")
        second = cluster.create_profile("two", {"handler": "gvisor", "runtime": {"engine": "gvisor"}})
        wait_until(lambda: cluster.handler(node, "gvisor"), what="the new leader to act")
        assert cluster.exists(lambda: cluster.runtime_class(second))
        assert cluster.exists(lambda: cluster.runtime_class(first))
        cluster.cleanup()  # while the new leader still runs to release the finalizers
    finally:
        standby.stop()
    operator.start()  # the fixture stops it at the end
