"""`kubehull-uninstall` (the chart's pre-delete hook) against the real API server, the agents played by the test.

The operator runs here as a process, not as the Deployment the hook scales to 0: the test stands a Deployment
in for it (no controller makes its pods) and stops the process itself. The whole path, agents and containerd
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
from kubehull_harness.waiting import wait_until
from tests.operator.conftest import GROUP, VERSION, Cluster, OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

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


def give_back(cluster: Cluster, taken: dict[str, Any]) -> None:
    """Create a NodeHandler again as it was, as an operator would."""
    metadata = {key: taken["metadata"][key] for key in ("name", "finalizers", "ownerReferences")}
    body = {"apiVersion": taken["apiVersion"], "kind": taken["kind"], "metadata": metadata, "spec": taken["spec"]}
    cluster.custom.create_cluster_custom_object(GROUP, VERSION, "nodehandlers", body)


def labelled(cluster: Cluster, node: str, label: str) -> bool:
    return label in cluster.handler_labels(node)


def test_uninstall_takes_the_handlers_off_and_names_the_silent_nodes(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    answering = [cluster.create_node(f"answers{index}") for index in range(2)]
    silent = cluster.create_node("silent", second="yes")
    agentless = cluster.create_node("agentless")
    nodes = (*answering, silent, agentless)
    handler = cluster.name("gv")
    spec = {"handler": handler, "runtime": {"engine": "gvisor"}, "rollout": {"maxUnavailable": "100%"}}
    profile = cluster.create_profile("gv", spec)
    # A second handler on the silent node, never reported on: its agent, which reports on the first, may be
    # configuring it right now, so the hook must wait for it as for the first.
    second = cluster.name("rc")
    selector = {"matchLabels": {"kubehull-test": cluster.prefix, "second": "yes"}}
    cluster.create_profile("rc", {"handler": second, "runtime": {"engine": "runc"}, "nodeSelector": selector})
    label = f"handler.kubehull.io/{handler}"
    for node in nodes:
        wait_until(functools.partial(cluster.handler, node, handler), 30, f"{node}'s handler")
    wait_until(functools.partial(cluster.handler, silent, second), 30, "the silent node's second handler")
    for node in (*answering, silent):
        cluster.report(node, {handler: True})
        wait_until(functools.partial(labelled, cluster, node, label), 30, f"{node} labelled")
    cluster.agents.stalled.update(nodes)  # the agents let nothing go until the test says so
    deployment = cluster.name("operator")
    apps = stand_in_deployment(cluster.server, deployment)
    try:
        operator.stop()  # what scaling its Deployment to 0 does to a real one

        taken = cluster.node_handler(answering[0], handler)
        code, stderr = finished(uninstall(cluster.server, deployment, timeout=8))
        assert apps.read_namespaced_deployment(deployment, NAMESPACE).spec.replicas == 0
        assert code == 1, stderr
        assert "the agents of 3 node(s) did not take their handlers off within 8s" in stderr, stderr
        for node in (*answering, silent):  # deleted, waiting for the agents
            assert cluster.node_handler(node, handler)["metadata"]["deletionTimestamp"], node
        assert cluster.node_handler(silent, second)["metadata"]["deletionTimestamp"]
        # Never reported on: nothing was configured there, and no agent would let it go.
        assert cluster.node_handlers(agentless) == {}

        # The agents that answer let their NodeHandlers go; the silent node's stays, and keeps its label.
        cluster.agents.stalled.difference_update(answering)
        code, stderr = finished(uninstall(cluster.server, deployment, timeout=8))
        assert code == 1, stderr
        assert (
            f"1 node(s) did not take their handlers off within 8s, their handlers may still be configured: {silent}"
            in stderr
        )
        assert all(not cluster.handler_labels(node) for node in answering)
        assert label in cluster.handler_labels(silent)

        # An operator process still running somewhere (on a lost node) gives a node its handler back, twice:
        # each time it is deleted again; then the silent agent answers too.
        node = answering[0]
        give_back(cluster, taken)
        running = uninstall(cluster.server, deployment, timeout=30)
        wait_until(lambda: cluster.node_handlers(node) == {}, 20, "the handler taken off", interval=0.2)
        give_back(cluster, taken)
        wait_until(lambda: cluster.node_handlers(node) == {}, 20, "the handler taken off again", interval=0.2)
        cluster.agents.stalled.clear()
        code, stderr = finished(running)
        assert code == 0, stderr
        assert f"NodeHandler {taken['metadata']['name']} is back; deleting it again" in stderr, stderr
        assert all(not cluster.handler_labels(node) for node in nodes)
        assert all(cluster.node_handlers(node) == {} for node in nodes)
        assert cluster.profile(profile)["metadata"]["name"] == profile  # profiles stay, as the CRDs do
    finally:
        cluster.agents.stalled.clear()
        operator.start()  # as a later install does (and the clean-up needs it: the profiles' finalizers)
        apps.delete_namespaced_deployment(deployment, NAMESPACE)
    for node in nodes:  # every node gets its handler back
        wait_until(functools.partial(cluster.handler, node, handler), 30, f"{node}'s handler back")
