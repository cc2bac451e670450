"""`kubehull-uninstall` (the chart's pre-delete hook) against the real API server, the agents played by the test.

The operator runs here as a process, not as the Deployment the hook scales to 0: the test stands a Deployment
in for it (no controller makes its pods) and stops the process itself, or leaves it running as an operator run
outside the cluster would be. The whole path, agents and containerd
included, runs on kind (e2e/test_kind.py).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Any

import pytest
from kubernetes import client as k8s

from kubehull_harness.apiserver import KubeAPIServer
from kubehull_harness.operators import OperatorProcess
from kubehull_harness.waiting import wait_until
from kubehull_operator.leader import DEFAULT_LEASE_NAME
from tests.operator.conftest import GROUP, VERSION, Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.beside]

NAMESPACE = "default"
SELECTOR = "app.kubernetes.io/component=operator,kubehull-test=uninstall"


def uninstall(server: KubeAPIServer, deployment: str, timeout: float) -> subprocess.Popen[str]:
    """`kubehull-uninstall` started (``.communicate()`` waits for it)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubehull_operator.uninstall",
            f"--namespace={NAMESPACE}",
            f"--operator-deployment={deployment}",
            f"--operator-selector={SELECTOR}",
            f"--timeout={timeout}",
        ],
        env={**os.environ, "KUBECONFIG": str(server.kubeconfig)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(run: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = run.communicate(timeout=120)
    return run.returncode, stderr


def stand_in_deployment(server: KubeAPIServer, name: str) -> Any:
    apps: Any = k8s.AppsV1Api(server.api_client())
    labels = {"app.kubernetes.io/component": "operator", "kubehull-test": "uninstall"}
    apps.create_namespaced_deployment(
        NAMESPACE,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "operator", "image": "kubehull/kubehull:0.1.0"}]},
                },
            },
        },
    )
    return apps


def emptied(cluster: Cluster, node: str) -> dict[str, Any] | None:
    current = cluster.node_runtime(node)
    return None if current["spec"].get("handlers") else current


def give_back(cluster: Cluster, node: str, handlers: list[dict[str, Any]]) -> None:
    """Write handlers into the node's NodeRuntime, as an operator would."""
    patch = {"spec": {"handlers": handlers}}
    cluster.custom.patch_cluster_custom_object(
        GROUP, VERSION, "noderuntimes", node, patch, _content_type="application/merge-patch+json"
    )


def labelled(cluster: Cluster, node: str, label: str) -> bool:
    return label in cluster.handler_labels(node)


def test_uninstall_takes_the_handlers_off_and_names_the_silent_nodes(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    answering = [cluster.create_node(f"answers{index}") for index in range(2)]
    silent = cluster.create_node("silent")
    agentless = cluster.create_node("agentless")
    spec = {"handler": cluster.name("gv"), "runtime": {"engine": "gvisor"}, "rollout": {"maxUnavailable": "100%"}}
    profile = cluster.create_profile("gv", spec)
    label = f"handler.kubehull.io/{cluster.name('gv')}"
    for node in (*answering, silent, agentless):
        wait_until(functools.partial(cluster.handler, node, cluster.name("gv")), 30, f"{node}'s handler")
    for node in (*answering, silent):
        cluster.report_all_ready(node)
        wait_until(functools.partial(labelled, cluster, node, label), 30, f"{node} labelled")
    deployment = cluster.name("operator")
    apps = stand_in_deployment(cluster.server, deployment)
    try:
        operator.stop()  # what scaling its Deployment to 0 does to a real one

        handlers = cluster.node_runtime(silent)["spec"]["handlers"]
        code, stderr = finished(uninstall(cluster.server, deployment, timeout=8))
        assert apps.read_namespaced_deployment(deployment, NAMESPACE).spec.replicas == 0
        assert code == 1, stderr
        assert "no report from the agents of 3 node(s) within 8s" in stderr, stderr
        for node in (*answering, silent, agentless):
            assert emptied(cluster, node) is not None, node

        # The agents that answer report the empty spec; the silent node's stays unconfirmed and keeps its label.
        for node in answering:
            cluster.report(node, {}, read=emptied(cluster, node))
        code, stderr = finished(uninstall(cluster.server, deployment, timeout=8))
        assert code == 1, stderr
        assert f"1 node(s) within 8s, their handlers may still be configured: {silent}" in stderr
        assert all(not cluster.handler_labels(node) for node in answering)
        assert label in cluster.handler_labels(silent)

        # An operator process still running somewhere (on a lost node) gives a node its handlers back, twice:
        # each time they are taken off again; then the agents report.
        node = answering[0]
        give_back(cluster, node, handlers)
        running = uninstall(cluster.server, deployment, timeout=30)
        wait_until(functools.partial(emptied, cluster, node), 20, "the handlers taken off", interval=0.2)
        give_back(cluster, node, handlers)
        wait_until(functools.partial(emptied, cluster, node), 20, "the handlers taken off again", interval=0.2)
        for reporting in (node, silent):
            cluster.report(reporting, {}, read=emptied(cluster, reporting))
        code, stderr = finished(running)
        assert code == 0, stderr
        assert f"NodeRuntime {node} has handlers again; emptying it again" in stderr, stderr
        assert all(not cluster.handler_labels(node) for node in (*answering, silent, agentless))
        assert cluster.profile(profile)["metadata"]["name"] == profile  # profiles stay, as the CRDs do
    finally:
        operator.start()  # as a later install does (and the clean-up needs it: the profiles' finalizers)
        apps.delete_namespaced_deployment(deployment, NAMESPACE)
    for node in (*answering, silent, agentless):  # every node gets its handler back
        wait_until(functools.partial(cluster.handler, node, cluster.name("gv")), 30, f"{node}'s handler back")


def lease_holder(cluster: Cluster) -> str:
    coordination: Any = k8s.CoordinationV1Api(cluster.server.api_client())
    holder: str = coordination.read_namespaced_lease(DEFAULT_LEASE_NAME, NAMESPACE).spec.holder_identity
    return holder


def test_uninstall_changes_nothing_while_an_operator_outside_the_release_leads(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """The operator process here stands for one run outside the cluster (``operator.replicas=0``): scaling the
    release's Deployment does not stop it, so the command waits for its lease, in vain, and fails naming it."""
    node = cluster.create_node("outside")
    handler = cluster.name("rc")
    cluster.create_profile("rc", {"handler": handler, "runtime": {"engine": "runc"}})
    wait_until(functools.partial(cluster.handler, node, handler), 30, f"{node}'s handler")
    leader = wait_until(functools.partial(lease_holder, cluster), 30, "the operator leading")
    deployment = cluster.name("operator")
    apps = stand_in_deployment(cluster.server, deployment)
    try:
        code, stderr = finished(uninstall(cluster.server, deployment, timeout=6))
    finally:
        apps.delete_namespaced_deployment(deployment, NAMESPACE)
    assert code == 1, stderr
    assert f"an operator still leads through the lease {NAMESPACE}/{DEFAULT_LEASE_NAME} (held by {leader})" in stderr
    assert cluster.handler(node, handler) is not None  # nothing taken off
    assert lease_holder(cluster) == leader
