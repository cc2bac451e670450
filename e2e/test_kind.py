"""kubehull on kind: a control plane and three workers built offline (harness kind.py), two workers whose CRI is
hulld and one (like the control plane) on containerd 2.x, with kubehull installed by its chart.

What runs here is the node agent against each kind of node at once: hulld adopted on the hulld nodes, a drop-in
and restarts on the containerd nodes, probes through each runtime, and the operator's status across them.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubehull_harness import deploy, kind
from kubehull_harness.manifests import pod, profile
from kubehull_harness.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

IMAGE_TAG = "0.1.0"
HULLD_WORKERS = ("kubehull-worker", "kubehull-worker2")
CONTAINERD_WORKER = "kubehull-worker3"
CONTROL_PLANE = "kubehull-control-plane"
WORKERS = {"matchLabels": {kind.WORKER_LABEL: "true"}}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, component_logs: Path, pytestconfig: pytest.Config
) -> Iterator[tuple[kind.KindCluster, str]]:
    """The cluster with kubehull installed, and the kubehull image's reference."""
    started = time.monotonic()
    with kind.run(tmp_path_factory.mktemp("kind"), component_logs, Path(pytestconfig.rootpath)) as up:
        created = time.monotonic()
        image = deploy.build_and_push_image(up, IMAGE_TAG)
        deploy.helm_install(up, image)
        installed = time.monotonic() - created
        print(f"kind cluster created in {created - started:.0f}s; kubehull installed {installed:.0f}s later")
        yield up, image


def get(up: kind.KindCluster, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(up.kubectl("get", *args, "-o", "json"))
    return found


def apply(up: kind.KindCluster, *documents: dict[str, Any]) -> None:
    up.apply(yaml.safe_dump_all(documents))


def status(up: kind.KindCluster, name: str) -> dict[str, Any]:
    found: dict[str, Any] = get(up, "runtimeprofile", name).get("status") or {}
    return found


def condition(up: kind.KindCluster, name: str, kind_of: str) -> str:
    conditions = {entry["type"]: entry["status"] for entry in status(up, name).get("conditions", [])}
    return str(conditions.get(kind_of, ""))


def labelled(up: kind.KindCluster, handler: str) -> set[str]:
    nodes = get(up, "nodes", "-l", f"handler.kubehull.io/{handler}")["items"]
    return {node["metadata"]["name"] for node in nodes}


def pinned(name: str, image: str, runtime_class: str, node: str, command: str) -> dict[str, Any]:
    manifest = pod(name, image, runtime_class, command)
    manifest["spec"]["nodeName"] = node
    return manifest


def running(up: kind.KindCluster, name: str) -> dict[str, Any] | None:
    found = get(up, "pod", name, "-n", "default")["status"]
    return found if found.get("phase") == "Running" else None


def test_runc_pods_run_on_hulld_and_containerd_nodes(cluster: tuple[kind.KindCluster, str]) -> None:
    up, image = cluster
    assert {name: up.nodes[name] for name in (*HULLD_WORKERS, CONTAINERD_WORKER)} == {
        "kubehull-worker": "hulld",
        "kubehull-worker2": "hulld",
        "kubehull-worker3": "containerd",
    }
    for node in get(up, "nodes")["items"]:
        runtime = node["status"]["nodeInfo"]["containerRuntimeVersion"]
        assert runtime.startswith(f"{up.nodes[node['metadata']['name']]}://"), runtime
    apply(up, profile("runc", "runc", "/usr/sbin/runc"))
    wait_until(lambda: condition(up, "runc", "Ready") == "True", 300, "RuntimeProfile runc Ready", interval=2)
    assert status(up, "runc")["ready"] == "4/4"
    assert labelled(up, "runc") == set(up.nodes)
    apply(
        up,
        *(pinned(f"runc-on-{node}", image, "runc", node, "echo started; sleep 100000") for node in HULLD_WORKERS),
        pinned("runc-on-containerd", image, "runc", CONTAINERD_WORKER, "echo started; sleep 100000"),
    )
    for name in (*(f"runc-on-{node}" for node in HULLD_WORKERS), "runc-on-containerd"):
        wait_until(functools.partial(running, up, name), 180, f"pod {name} Running", interval=1)
        assert "started" in up.kubectl("logs", "-n", "default", name)
    # The kubelet of a containerd node sees the agent's probe pods and removes their exited containers, deleting
    # "<log path>*" first: the probes' log paths keep that away from the node's root (probe.py).
    for node in (CONTROL_PLANE, CONTAINERD_WORKER):
        assert up.node_exec(node, "ls", "-d", "/bin", "/sbin", "/lib", "/lib64").split() == [
            "/bin",
            "/lib",
            "/lib64",
            "/sbin",
        ], node


def test_a_handler_missing_on_one_worker_is_reported_by_name(cluster: tuple[kind.KindCluster, str]) -> None:
    up, _ = cluster
    for node in (HULLD_WORKERS[0], CONTAINERD_WORKER):  # not on kubehull-worker2
        up.node_exec(node, "sh", "-c", "mkdir -p /opt/partial && ln -sf /usr/sbin/runc /opt/partial/runc")
    partial = profile("partial", "runc", "/opt/partial/runc")
    partial["spec"]["nodeSelector"] = WORKERS
    partial["spec"]["rollout"] = {"maxUnavailable": "100%"}  # every worker at once: a failure halts a rollout
    apply(up, partial)

    def reported() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = status(up, "partial").get("failures", [])
        return found if status(up, "partial").get("ready") == "2/3" else []

    failures = wait_until(reported, 300, "the missing binary reported", interval=2)
    assert [failure["node"] for failure in failures] == ["kubehull-worker2"], failures
    assert "/opt/partial/runc" in failures[0]["message"], failures
    assert condition(up, "partial", "Degraded") == "True", status(up, "partial")
    assert labelled(up, "partial") == {HULLD_WORKERS[0], CONTAINERD_WORKER}
    assert labelled(up, "runc") == set(up.nodes)  # the other profile is untouched
    up.kubectl("delete", "runtimeprofile", "partial", "--wait=true")
    wait_until(lambda: not labelled(up, "partial"), 120, "the partial profile's labels removed", interval=1)


def test_containerd_keeps_pods_through_dropin_changes(cluster: tuple[kind.KindCluster, str]) -> None:
    up, _ = cluster
    before = wait_until(functools.partial(running, up, "runc-on-containerd"), 180, "the pod Running", interval=1)
    restarts = containerd_starts(up)
    second = profile("second", "runc", "/usr/sbin/runc")
    second["spec"]["nodeSelector"] = {"matchLabels": {kind.CRI_LABEL: "containerd"}}
    apply(up, second)
    wait_until(lambda: condition(up, "second", "Ready") == "True", 300, "RuntimeProfile second Ready", interval=2)
    assert "second" in dropin(up)
    assert containerd_starts(up) > restarts  # the drop-in changed: containerd was restarted for it
    up.kubectl("delete", "runtimeprofile", "second", "--wait=true")
    wait_until(lambda: "second" not in dropin(up), 180, "the handler gone from the drop-in", interval=2)
    wait_until(lambda: not labelled(up, "second"), 120, "the second profile's labels removed", interval=1)
    after = running(up, "runc-on-containerd")
    assert after is not None
    assert after["containerStatuses"][0]["containerID"] == before["containerStatuses"][0]["containerID"]
    assert after["containerStatuses"][0]["restartCount"] == 0


def dropin(up: kind.KindCluster) -> str:
    return up.node_exec(CONTAINERD_WORKER, "cat", "/etc/containerd/conf.d/kubehull.toml")


def containerd_starts(up: kind.KindCluster) -> int:
    """How many times systemd has started containerd on the containerd worker."""
    journal = up.node_exec(CONTAINERD_WORKER, "journalctl", "--no-pager", "-u", "containerd")
    return journal.count("Started containerd.service")


def test_deleting_a_worker_removes_its_noderuntime(cluster: tuple[kind.KindCluster, str]) -> None:
    up, _ = cluster
    assert get(up, "noderuntime", HULLD_WORKERS[1])["metadata"]["name"] == HULLD_WORKERS[1]
    up.node_exec(HULLD_WORKERS[1], "systemctl", "stop", "kubelet")  # or it registers the node again
    up.kubectl("delete", "node", HULLD_WORKERS[1], "--wait=true")

    def gone() -> bool:
        names = {item["metadata"]["name"] for item in get(up, "noderuntimes")["items"]}
        return HULLD_WORKERS[1] not in names

    wait_until(gone, 120, f"NodeRuntime {HULLD_WORKERS[1]} removed", interval=1)
