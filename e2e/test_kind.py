"""kubehull on kind: a control plane and three workers built offline (harness kind.py), two workers whose CRI is
hulld and one (like the control plane) on containerd 2.x, with kubehull installed by its chart.

What runs here is the node agent against each kind of node at once: hulld adopted on the hulld nodes, a drop-in
and restarts on the containerd nodes, probes through each runtime, and the operator's status across them.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubehull_harness import deploy, kind, rollouts
from kubehull_harness.manifests import pod, profile
from kubehull_harness.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.root, pytest.mark.slow, pytest.mark.kind]

IMAGE_TAG = "0.1.0"
HULLD_WORKERS = ("kubehull-worker", "kubehull-worker2")
CONTAINERD_WORKER = "kubehull-worker3"
CONTROL_PLANE = "kubehull-control-plane"
WORKERS = {"matchLabels": {kind.WORKER_LABEL: "true"}}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    component_logs: Path,
    pytestconfig: pytest.Config,
    image_build_dir: Path,
) -> Iterator[tuple[kind.KindCluster, str]]:
    """The cluster with kubehull installed, and the kubehull image's reference."""
    started = time.monotonic()
    with kind.run(tmp_path_factory.mktemp("kind"), component_logs, Path(pytestconfig.rootpath)) as up:
        created = time.monotonic()
        image = deploy.build_and_push_image(up, IMAGE_TAG, image_build_dir)
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


def ready(up: kind.KindCluster, name: str) -> bool:
    return condition(up, name, "Ready") == "True"


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
        assert_cluster_dns(up, name)
    # The kubelet of a containerd node sees the agent's probe pods and removes their exited containers, deleting
    # "<log path>*" first: the probes' log paths keep that away from the node's root (probe.py).
    for node in (CONTROL_PLANE, CONTAINERD_WORKER):
        assert up.node_exec(node, "ls", "-d", "/bin", "/sbin", "/lib", "/lib64").split() == [
            "/bin",
            "/lib",
            "/lib64",
            "/sbin",
        ], node


SHOW_KERNEL = "dmesg 2>&1 | head -n 3; echo started; sleep 100000"


def test_gvisor_pods_run_on_hulld_and_containerd_workers(cluster: tuple[kind.KindCluster, str]) -> None:
    up, image = cluster
    gvisor = profile("gvisor", "gvisor", kind.gvisor_directory(up.work_dir) / "runsc")
    gvisor["spec"]["nodeSelector"] = WORKERS
    apply(up, gvisor)
    wait_until(lambda: condition(up, "gvisor", "Ready") == "True", 300, "RuntimeProfile gvisor Ready", interval=2)
    assert status(up, "gvisor")["ready"] == "3/3"
    assert labelled(up, "gvisor") == {*HULLD_WORKERS, CONTAINERD_WORKER}
    # Pinned to a hulld worker and to the containerd worker; a third left to the scheduler, which the
    # RuntimeClass keeps to the nodes that have the handler ready.
    apply(
        up,
        pinned("gvisor-on-hulld", image, "gvisor", HULLD_WORKERS[0], SHOW_KERNEL),
        pinned("gvisor-on-containerd", image, "gvisor", CONTAINERD_WORKER, SHOW_KERNEL),
        pod("gvisor-scheduled", image, "gvisor", SHOW_KERNEL),
    )
    for name in ("gvisor-on-hulld", "gvisor-on-containerd", "gvisor-scheduled"):
        wait_until(functools.partial(running, up, name), 180, f"pod {name} Running", interval=1)
        log = wait_until(functools.partial(started, up, name), 60, f"pod {name}'s log", interval=1)
        assert "gVisor" in log, log  # gVisor's own kernel log ("Starting gVisor..."), not the host's
        assert_cluster_dns(up, name)
    assert get(up, "pod", "gvisor-scheduled", "-n", "default")["spec"]["nodeName"] in labelled(up, "gvisor")
    node_selector = get(up, "runtimeclass", "gvisor")["scheduling"]["nodeSelector"]
    assert node_selector == {"handler.kubehull.io/gvisor": "true"}, node_selector


def started(up: kind.KindCluster, name: str) -> str | None:
    log = up.kubectl("logs", "-n", "default", name)
    return log if "started" in log else None


def assert_cluster_dns(up: kind.KindCluster, pod_name: str) -> None:
    """The pod resolves a Service's name through CoreDNS's Service address (DNS settings, kube-proxy, routes)."""
    answer = up.kubectl("exec", "-n", "default", pod_name, "--", "nslookup", "kubernetes.default.svc.cluster.local")
    assert "Address: 10.96.0.1" in answer, f"{pod_name}: {answer}"


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


class RolloutWatch:
    """Counts, from the NodeRuntime objects read every few tenths of a second, the most workers a rollout held
    unavailable at once."""

    def __init__(self, up: kind.KindCluster, handler: str) -> None:
        self.up, self.handler = up, handler
        self.most = 0
        self.reads = 0
        self.failed_reads: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                listed = get(self.up, "noderuntimes")["items"]
            except Exception as error:  # a read that failed is a moment not seen: the test counts them
                self.failed_reads.append(repr(error))
                continue
            self.most = max(self.most, rollouts.unavailable(listed, self.handler, {*HULLD_WORKERS, CONTAINERD_WORKER}))
            self.reads += 1

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.most


def test_a_rollout_takes_one_worker_at_a_time(cluster: tuple[kind.KindCluster, str]) -> None:
    """maxUnavailable 1 over three real agents (two kinds of runtime): a new handler, then a change to it."""
    up, _ = cluster
    for node in (*HULLD_WORKERS, CONTAINERD_WORKER):
        up.node_exec(node, "sh", "-c", "mkdir -p /opt/alternative && ln -sf /usr/sbin/runc /opt/alternative/runc")
    rolling = profile("rolling", "runc", "/usr/sbin/runc")
    rolling["spec"]["nodeSelector"] = WORKERS
    rolling["spec"]["rollout"] = {"maxUnavailable": 1}
    for path in ("/usr/sbin/runc", "/opt/alternative/runc"):
        rolling["spec"]["runtime"]["path"] = path
        watch = RolloutWatch(up, "rolling")
        try:
            apply(up, rolling)
            wait_until(functools.partial(rolled_out, up, "rolling", path), 300, f"the rollout of {path}", interval=1)
        finally:
            most = watch.stop()
        assert most == 1, f"{path}: {most} workers unavailable at once ({watch.reads} reads)"
        assert not watch.failed_reads, watch.failed_reads
    up.kubectl("delete", "runtimeprofile", "rolling", "--wait=true")


def rolled_out(up: kind.KindCluster, name: str, path: str) -> bool:
    """Whether every NodeRuntime has profile ``name``'s handler at ``path`` and the profile is Ready on all."""
    paths = {
        handler["path"]
        for item in get(up, "noderuntimes")["items"]
        for handler in item["spec"].get("handlers", [])
        if handler["name"] == name
    }
    return paths == {path} and ready(up, name) and status(up, name)["ready"] == "3/3"


def test_containerd_keeps_pods_through_dropin_changes(cluster: tuple[kind.KindCluster, str]) -> None:
    up, _ = cluster
    before = wait_until(functools.partial(running, up, "runc-on-containerd"), 180, "the pod Running", interval=1)
    restarts = containerd_starts(up)
    second = profile("second", "runc", "/usr/sbin/runc")
    second["spec"]["nodeSelector"] = {"matchLabels": {kind.CRI_LABEL: "containerd"}}
    apply(up, second)
    wait_until(lambda: condition(up, "second", "Ready") == "True", 300, "RuntimeProfile second Ready", interval=2)
    assert "second" in dropin(up)
    added = containerd_starts(up)
    assert added > restarts  # the drop-in changed: containerd was restarted for it
    up.kubectl("delete", "runtimeprofile", "second", "--wait=true")
    # Written first, then containerd restarted: the test is over when the restart is (the next counts restarts).
    wait_until(
        lambda: "second" not in dropin(up) and containerd_starts(up) > added and containerd_active(up),
        300,
        "the handler gone from the drop-in and containerd restarted for it",
        interval=2,
    )
    wait_until(lambda: not labelled(up, "second"), 120, "the second profile's labels removed", interval=1)
    after = running(up, "runc-on-containerd")
    assert after is not None
    assert after["containerStatuses"][0]["containerID"] == before["containerStatuses"][0]["containerID"]
    assert after["containerStatuses"][0]["restartCount"] == 0


def dropin(up: kind.KindCluster, node: str = CONTAINERD_WORKER) -> str:
    return up.node_exec(node, "cat", "/etc/containerd/conf.d/kubehull.toml")


def containerd_starts(up: kind.KindCluster, node: str = CONTAINERD_WORKER) -> int:
    """How many times systemd has started containerd on ``node``."""
    journal = up.node_exec(node, "journalctl", "--no-pager", "-u", "containerd")
    return journal.count("Started containerd.service")


def containerd_active(up: kind.KindCluster, node: str = CONTAINERD_WORKER) -> bool:
    """Whether containerd runs on ``node``, not in the middle of a restart."""
    state = up.node_exec(node, "systemctl", "show", "--property=ActiveState", "--value", "containerd")
    return state.strip() == "active"


def test_helm_upgrade_restarts_no_pod_and_no_runtime(
    cluster: tuple[kind.KindCluster, str], image_build_dir: Path
) -> None:
    """A new image tag for the agents on every node: the running pods keep their containers, containerd is not
    restarted (the new agents render the same drop-in) and neither is hulld."""
    up, _ = cluster
    pods = ("runc-on-kubehull-worker", "runc-on-containerd", "gvisor-on-hulld", "gvisor-on-containerd")
    before = {name: wait_until(functools.partial(running, up, name), 60, name)["containerStatuses"][0] for name in pods}
    agents = set(agent_pods(up))
    wait_until(lambda: containerd_active(up), 180, "containerd running", interval=2)
    containerd = containerd_starts(up)
    hulld = {node: up.node_exec(node, "systemctl", "show", "--property=MainPID", "hulld") for node in HULLD_WORKERS}
    deploy.helm_install(up, deploy.build_and_push_image(up, "0.1.1", image_build_dir), upgrade=True)
    wait_until(lambda: not agents & set(agent_pods(up)), 300, "every agent replaced", interval=2)
    for name in ("runc", "gvisor"):
        wait_until(functools.partial(ready, up, name), 300, f"{name} Ready", interval=2)
    for name, container in before.items():
        now = running(up, name)
        assert now is not None, name
        assert now["containerStatuses"][0]["containerID"] == container["containerID"], name
        assert now["containerStatuses"][0]["restartCount"] == container["restartCount"], name
    assert containerd_starts(up) == containerd, agent_logs(up)  # the agents say why they restarted it
    assert {
        node: up.node_exec(node, "systemctl", "show", "--property=MainPID", "hulld") for node in HULLD_WORKERS
    } == hulld


def agent_logs(up: kind.KindCluster) -> str:
    """The agents' recent logs, for a failure's message (they go with the chart, before the teardown's export)."""
    return up.kubectl(
        "logs",
        f"--namespace={deploy.NAMESPACE}",
        "--selector=app.kubernetes.io/component=agent",
        "--prefix",
        "--tail=40",
    )


def agent_pods(up: kind.KindCluster) -> list[str]:
    return up.kubectl(
        "get",
        "pods",
        f"--namespace={deploy.NAMESPACE}",
        "--selector=app.kubernetes.io/component=agent",
        "--output=jsonpath={.items[*].metadata.name}",
    ).split()


def test_helm_uninstall_takes_the_handlers_off_every_node(cluster: tuple[kind.KindCluster, str]) -> None:
    """The chart's pre-delete hook stops the operator and empties every NodeRuntime; the agents remove the
    drop-ins (containerd restarted once for it) before the chart's resources go."""
    up, _ = cluster
    containerd_nodes = (CONTROL_PLANE, CONTAINERD_WORKER)
    assert all("[plugins" in dropin(up, node) for node in containerd_nodes)
    for node in containerd_nodes:
        wait_until(functools.partial(containerd_active, up, node), 180, f"containerd running on {node}", interval=2)
    starts = {node: containerd_starts(up, node) for node in containerd_nodes}
    up.save_kubehull_logs("kind-kubehull-pods-before-uninstall.log")  # the teardown's export finds none
    deploy.helm_uninstall(up)
    for node in containerd_nodes:
        assert up.node_exec(node, "ls", "/etc/containerd/conf.d").split() == [], node  # no drop-in, no kubehull.d
        assert containerd_starts(up, node) == starts[node] + 1, node
    for node in get(up, "nodes")["items"]:
        labels = node["metadata"].get("labels", {})
        assert not [key for key in labels if key.startswith("handler.kubehull.io/")], node["metadata"]["name"]
    wait_until(lambda: not agent_pods(up), 120, "the agents' pods gone", interval=1)  # deleted in the background
    assert get(up, "runtimeprofiles")["items"]  # the profiles stay, as the CRDs do


def test_deleting_a_worker_removes_its_noderuntime(cluster: tuple[kind.KindCluster, str]) -> None:
    up, _ = cluster
    assert get(up, "noderuntime", HULLD_WORKERS[1])["metadata"]["name"] == HULLD_WORKERS[1]
    # Last: the worker's pods go on running without a kubelet, an operator replica among them perhaps.
    up.node_exec(HULLD_WORKERS[1], "systemctl", "stop", "kubelet")  # or it registers the node again
    up.kubectl("delete", "node", HULLD_WORKERS[1], "--wait=true")

    def gone() -> bool:
        names = {item["metadata"]["name"] for item in get(up, "noderuntimes")["items"]}
        return HULLD_WORKERS[1] not in names

    wait_until(gone, 120, f"NodeRuntime {HULLD_WORKERS[1]} removed", interval=1)
