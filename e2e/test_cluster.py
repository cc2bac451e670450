"""End to end on a real one-node cluster: the kubelet runs every pod through hulld, kubehull is installed with
its chart from an image built here, and RuntimeProfiles decide which runtime a pod gets.

The steps share one cluster and run in order (each builds on the one before), as a user would go.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubehull_harness import cluster, deploy, processes, prometheus, shims, toolchain
from kubehull_harness.manifests import pod, profile
from kubehull_harness.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = REPO / "charts" / "kubehull" / "dashboards"
IMAGE_TAG = "0.1.0"


@dataclasses.dataclass
class Environment:
    local: cluster.LocalCluster
    image: str
    prometheus: prometheus.Prometheus
    timings: dict[str, float]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, component_logs: Path, image_build_dir: Path) -> Iterator[Environment]:
    work_dir = tmp_path_factory.mktemp("cluster")
    started = time.monotonic()
    with cluster.run(work_dir, component_logs) as local:
        timings = {"cluster up (node Ready)": time.monotonic() - started}
        mark = time.monotonic()
        image = deploy.build_and_push_image(local, IMAGE_TAG, image_build_dir)
        timings["image built and pushed"] = time.monotonic() - mark
        mark = time.monotonic()
        deploy.helm_install(local, image, f"agent.hostPid={local.host_pid}")
        timings["chart installed (pods Ready)"] = time.monotonic() - mark
        scraper = prometheus.start(
            work_dir / "prometheus",
            component_logs,
            [
                prometheus.Job("kubehull-operator", [f"{ip}:8080" for ip in deploy.pod_ips(local, "operator")]),
                prometheus.Job("kubehull-agent", [f"{local.node_ip}:9104"]),  # the host network
                prometheus.Job("hulld", [f"{local.node_ip}:9104"], path="/metrics/hulld"),  # relayed by the agent
            ],
            labels={"node": local.node_name},
        )
        try:
            yield Environment(local=local, image=image, prometheus=scraper, timings=timings)
        finally:
            scraper.stop()
            print("timings:", json.dumps({key: round(value, 1) for key, value in timings.items()}))


def apply(local: cluster.LocalCluster, *documents: dict[str, Any]) -> None:
    manifest = local.work_dir / "apply.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    local.kubectl("apply", "-f", manifest)


def get(local: cluster.LocalCluster, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(local.kubectl("get", *args, "-o", "json"))
    return found


def profile_ready(local: cluster.LocalCluster, name: str) -> bool:
    status = get(local, "runtimeprofile", name).get("status") or {}
    conditions = {condition["type"]: condition["status"] for condition in status.get("conditions", [])}
    return conditions.get("Ready") == "True" and status.get("ready") == "1/1"


def node_labels(local: cluster.LocalCluster) -> dict[str, str]:
    labels: dict[str, str] = get(local, "node", local.node_name)["metadata"]["labels"]
    return labels


def pod_phase(local: cluster.LocalCluster, name: str) -> str:
    return str(get(local, "pod", name, "-n", "default")["status"].get("phase"))


def pod_running(local: cluster.LocalCluster, name: str) -> bool:
    return pod_phase(local, name) == "Running"


def log_of(local: cluster.LocalCluster, name: str) -> str:
    return local.kubectl("logs", "-n", "default", name)


def started_log(local: cluster.LocalCluster, name: str) -> str:
    log = log_of(local, name)
    return log if "started" in log else ""


SHOW_KERNEL = "uname -r; dmesg 2>&1 | head -n 3; echo started; sleep 100000"


def test_profiles_become_ready_and_label_the_node(env: Environment) -> None:
    local = env.local
    started = time.monotonic()
    apply(
        local,
        profile("runc", "runc", "/usr/bin/runc"),
        profile("gvisor", "gvisor", toolchain.binary("runsc"), {"platform": "systrap"}),
        profile("spare", "runc", "/usr/bin/runc"),
    )
    for name in ("runc", "gvisor", "spare"):
        wait_until(functools.partial(profile_ready, local, name), 180, f"RuntimeProfile {name} Ready 1/1", interval=1)
    env.timings["profiles Ready 1/1"] = time.monotonic() - started
    labels = node_labels(local)
    for handler in ("runc", "gvisor", "spare"):
        assert labels.get(f"handler.kubehull.io/{handler}") == "true", labels
    runtime_class = get(local, "runtimeclass", "gvisor")
    assert runtime_class["handler"] == "gvisor"


def test_pods_run_under_their_runtime_and_log(env: Environment) -> None:
    local = env.local
    started = time.monotonic()
    apply(local, pod("on-gvisor", env.image, "gvisor", SHOW_KERNEL), pod("on-runc", env.image, "runc", SHOW_KERNEL))
    for name in ("on-gvisor", "on-runc"):
        wait_until(functools.partial(pod_running, local, name), 180, f"pod {name} Running", interval=1)
    env.timings["pods Running"] = time.monotonic() - started
    host_kernel = Path("/proc/sys/kernel/osrelease").read_text().strip()
    gvisor_log = wait_until(lambda: started_log(local, "on-gvisor"), 120, "the gVisor pod's log", interval=1)
    runc_log = wait_until(lambda: started_log(local, "on-runc"), 120, "the runc pod's log", interval=1)
    assert "gVisor" in gvisor_log, gvisor_log  # gVisor's own kernel log: "Starting gVisor..."
    assert host_kernel not in gvisor_log.splitlines()[0], gvisor_log
    assert runc_log.splitlines()[0] == host_kernel, runc_log
    assert "gVisor" not in runc_log


def test_kubectl_exec_reaches_runc_and_gvisor_pods(env: Environment) -> None:
    """kubectl exec through the API server and the kubelet to hulld's streaming server: output, the command's
    exit code as kubectl's own, and 100 MiB of input through the pod without loss (checksum compared)."""
    local = env.local
    kubectl = [str(toolchain.binary("kubectl")), f"--kubeconfig={local.kubeconfig}", "exec", "-n", "default"]
    data = os.urandom(100 * 1024 * 1024)
    host_kernel = Path("/proc/sys/kernel/osrelease").read_text().strip()
    for name in ("on-runc", "on-gvisor"):
        said = subprocess.run(
            [*kubectl, name, "--", "sh", "-c", "uname -r; echo to-stderr >&2; exit 3"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert said.returncode == 3, said.stderr
        assert (said.stdout.strip() == host_kernel) is (name == "on-runc"), said.stdout  # gVisor has its own
        assert "to-stderr" in said.stderr
        piped = subprocess.run([*kubectl, "-i", name, "--", "md5sum"], input=data, capture_output=True, timeout=120)
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()  # noqa: S324 - a checksum


def test_kubectl_port_forward_reaches_runc_and_gvisor_pods(env: Environment) -> None:
    """kubectl port-forward through the API server and the kubelet into a web server in each kind of pod (in
    gVisor's own network stack, too): 5 MiB fetched over the forwarded port, checksum compared with the pod's,
    then four times at once on parallel connections of the same session."""
    local = env.local
    serve = "mkdir /tmp/www && head -c 5242880 /dev/urandom > /tmp/www/big && httpd -f -p 8080 -h /tmp/www"
    apply(local, pod("serve-runc", env.image, "runc", serve), pod("serve-gvisor", env.image, "gvisor", serve))
    kubectl = [str(toolchain.binary("kubectl")), f"--kubeconfig={local.kubeconfig}", "-n", "default"]
    for name in ("serve-runc", "serve-gvisor"):
        wait_until(functools.partial(pod_running, local, name), 180, f"pod {name} Running", interval=1)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        forwarder = subprocess.Popen(
            [*kubectl, "port-forward", f"pod/{name}", f"{port}:8080"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            fetched = wait_until(functools.partial(_fetch, port), 60, "the forwarded port", interval=1)
            in_pod = local.kubectl("exec", "-n", "default", name, "--", "md5sum", "/tmp/www/big").split()[0]
            assert hashlib.md5(fetched).hexdigest() == in_pod  # noqa: S324 - a checksum
            with concurrent.futures.ThreadPoolExecutor(4) as pool:  # parallel connections on the same session
                assert list(pool.map(_fetch, [port] * 4)) == [fetched] * 4
        finally:
            forwarder.terminate()
            output, _ = forwarder.communicate(timeout=20)
        assert "error" not in output.lower(), output
    local.kubectl("delete", "pod", "-n", "default", "serve-runc", "serve-gvisor", "--wait=true")


def test_kubectl_attach_and_cp_reach_runc_and_gvisor_pods(env: Environment, tmp_path: Path) -> None:
    """kubectl attach -i to a pod made for it (stdin, stdinOnce): its shell runs what is sent and the pod ends
    with its exit code; kubectl cp (tar through exec) copies a file into each kind of pod and back, unchanged."""
    local = env.local
    kubectl = [str(toolchain.binary("kubectl")), f"--kubeconfig={local.kubeconfig}", "-n", "default"]
    data = os.urandom(1024 * 1024)
    (tmp_path / "in").write_bytes(data)
    for runtime_class in ("runc", "gvisor"):
        name = f"attached-{runtime_class}"
        manifest = pod(name, env.image, runtime_class, "")
        manifest["spec"]["restartPolicy"] = "Never"
        manifest["spec"]["containers"][0] |= {"command": ["sh"], "stdin": True, "stdinOnce": True}
        apply(local, manifest)
        wait_until(functools.partial(pod_running, local, name), 180, f"pod {name} Running", interval=1)
        attached = subprocess.run(
            [*kubectl, "attach", "-i", name],
            input=b"echo attached-to-$(uname -s); exit 3\n",
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert b"attached-to-Linux" in attached.stdout, attached.stderr

        def ended(name: str = name) -> bool:
            return pod_phase(local, name) == "Failed"

        wait_until(ended, 60, f"pod {name} to end", interval=1)
        terminated = get(local, "pod", name, "-n", "default")["status"]["containerStatuses"][0]["state"]
        assert terminated["terminated"]["exitCode"] == 3

        target = "on-runc" if runtime_class == "runc" else "on-gvisor"
        copied = subprocess.run(
            [*kubectl, "cp", str(tmp_path / "in"), f"{target}:/tmp/copied"], capture_output=True, timeout=60
        )
        assert copied.returncode == 0, copied.stderr
        back = tmp_path / f"back-{runtime_class}"
        copied = subprocess.run([*kubectl, "cp", f"{target}:/tmp/copied", str(back)], capture_output=True, timeout=60)
        assert copied.returncode == 0, copied.stderr
        assert back.read_bytes() == data
    local.kubectl("delete", "pod", "-n", "default", "attached-runc", "attached-gvisor", "--wait=true")


def _fetch(port: int) -> bytes | None:
    """GET /big on a local port: its body, or None while the forward is not there yet."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/big")
        answer = connection.getresponse()
        return answer.read() if answer.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def two_containers(name: str, image: str, runtime_class: str, first: str, second: str, **spec: Any) -> dict[str, Any]:
    manifest = pod(name, image, runtime_class, first)
    manifest["spec"]["containers"].append(
        {"name": "second", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", second]}
    )
    manifest["spec"].update(spec)
    return manifest


def test_containers_of_a_pod_share_its_sandbox_and_pid_namespace(env: Environment) -> None:
    """Through the kubelet: a web server and a client in one gVisor pod reach each other over localhost (one
    sandbox per pod), and the containers of a shareProcessNamespace pod see each other's processes."""
    local = env.local
    serve = "mkdir -p /tmp/www && echo served-in-the-pod > /tmp/www/index.html && httpd -f -p 8080 -h /tmp/www"
    fetch = "until wget -q -O - http://127.0.0.1:8080/; do sleep 1; done; echo started; sleep 100000"
    look = "sleep 3; ps; echo started; sleep 100000"
    apply(
        local,
        two_containers("gvisor-sidecar", env.image, "gvisor", serve, fetch),
        two_containers("shared-pids", env.image, "runc", "sleep 100001", look, shareProcessNamespace=True),
    )

    def second_log(name: str) -> str:
        log = local.kubectl("logs", "-n", "default", name, "-c", "second")
        return log if "started" in log else ""

    assert "served-in-the-pod" in wait_until(lambda: second_log("gvisor-sidecar"), 180, "the fetch", interval=1)
    assert "sleep 100001" in wait_until(lambda: second_log("shared-pids"), 180, "the other's process", interval=1)
    local.kubectl("delete", "pod", "-n", "default", "gvisor-sidecar", "shared-pids", "--wait=true")


def test_a_namespace_default_runs_a_deployments_pods_under_gvisor(env: Environment) -> None:
    """A profile's namespace default (a MutatingAdmissionPolicy the operator owns): a Deployment in a namespace
    labelled for it, naming no RuntimeClass, runs its pods in gVisor; enforced, another class is refused."""
    local = env.local
    tenant = profile("gvisor-tenants", "gvisor", toolchain.binary("runsc"), {"platform": "systrap"})
    tenant["spec"]["handler"] = "gvisor"  # the gvisor profile's handler and settings: a second RuntimeClass
    tenant["spec"]["namespaceDefault"] = {"namespaceSelector": {"matchLabels": {"tenant": "ci"}}, "enforce": True}
    apply(
        local,
        tenant,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ci-1", "labels": {"tenant": "ci"}}},
    )

    def covered() -> dict[str, Any] | None:
        status = get(local, "runtimeprofile", "gvisor-tenants").get("status") or {}
        conditions = {condition["type"]: condition["status"] for condition in status.get("conditions", [])}
        if conditions.get("NamespaceDefault") == "True" and (status.get("namespaces") or {}).get("names") == ["ci-1"]:
            return status
        return None

    wait_until(covered, 180, "the profile covering namespace ci-1", interval=1)

    def defaulted() -> bool:  # a server-side dry run goes through admission: the policy is in force
        planned = local.kubectl("run", "-n", "ci-1", "probe", f"--image={env.image}", "--dry-run=server", "-o", "json")
        return bool(json.loads(planned)["spec"].get("runtimeClassName") == "gvisor-tenants")

    wait_until(defaulted, 30, "the API server to apply the policy", interval=0.5)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ci-1"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "main",
                            "image": env.image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", SHOW_KERNEL],
                        }
                    ],
                },
            },
        },
    }
    apply(local, deployment)

    def started() -> str:
        pods = get(local, "pods", "-n", "ci-1", "-l", "app=web")["items"]
        running = [item for item in pods if item["status"].get("phase") == "Running"]
        if not running:
            return ""
        assert running[0]["spec"]["runtimeClassName"] == "gvisor-tenants"
        log = local.kubectl("logs", "-n", "ci-1", running[0]["metadata"]["name"])
        return log if "started" in log else ""

    log = wait_until(started, 180, "the Deployment's pod in gVisor", interval=1)
    assert "gVisor" in log, log
    overrides = json.dumps({"spec": {"runtimeClassName": "runc"}})
    with pytest.raises(processes.ProcessError) as refused:
        local.kubectl("run", "-n", "ci-1", "plain", f"--image={env.image}", f"--overrides={overrides}")
    assert "runs its pods under RuntimeProfile gvisor-tenants" in str(refused.value)
    local.kubectl("delete", "namespace", "ci-1", "--wait=true")
    local.kubectl("delete", "runtimeprofile", "gvisor-tenants", "--wait=true")


def test_a_vm_profile_runs_its_pods_through_a_containerd_shim(env: Environment) -> None:
    """runtimeType vm: gVisor through its containerd shim v2 (containerd-shim-runsc-v1) instead of runsc's
    command line; the profile goes Ready (the agent's probe ran a container through the shim) and a pod of its
    class runs in gVisor. Kata's shim speaks the same protocol (docs/examples/kata.yaml)."""
    local = env.local
    shim, shim_config = shims.runsc_shim(local.work_dir / "gvisor-shim")
    vm_profile = profile("gvisor-shim", "gvisor", shim)
    vm_profile["spec"]["runtime"].update(runtimeType="vm", configPath=str(shim_config))
    apply(local, vm_profile)
    wait_until(functools.partial(profile_ready, local, "gvisor-shim"), 180, "profile gvisor-shim Ready", interval=1)
    apply(local, pod("on-gvisor-shim", env.image, "gvisor-shim", SHOW_KERNEL))
    log = wait_until(lambda: started_log(local, "on-gvisor-shim"), 180, "the shim pod's log", interval=1)
    assert "gVisor" in log, log
    assert Path("/proc/sys/kernel/osrelease").read_text().strip() not in log.splitlines()[0], log
    local.kubectl("delete", "pod", "-n", "default", "on-gvisor-shim", "--wait=true")


def test_unready_handler_pends_and_deleting_a_profile_leaves_other_pods_alone(env: Environment) -> None:
    local = env.local
    apply(local, profile("broken", "runc", "/opt/kubehull-missing/runc"))
    wait_until(lambda: get(local, "runtimeclass", "broken"), 120, "RuntimeClass broken", interval=1)

    def broken_reported() -> bool:
        status = get(local, "runtimeprofile", "broken").get("status") or {}
        return bool(status.get("failures"))

    wait_until(broken_reported, 120, "the broken handler's failure in its status", interval=1)
    failure = get(local, "runtimeprofile", "broken")["status"]["failures"][0]
    assert failure["node"] == local.node_name
    assert "/opt/kubehull-missing/runc" in failure["message"], failure
    apply(local, pod("on-broken", env.image, "broken", "sleep 100000"))

    def unschedulable() -> str:
        conditions = get(local, "pod", "on-broken", "-n", "default")["status"].get("conditions", [])
        scheduled: dict[str, str] = next((c for c in conditions if c["type"] == "PodScheduled"), {})
        return str(scheduled.get("message", "")) if scheduled.get("reason") == "Unschedulable" else ""

    message = wait_until(unschedulable, 120, "the scheduler's reason", interval=1)
    assert "node affinity/selector" in message, message
    assert pod_phase(local, "on-broken") == "Pending"

    before = {name: get(local, "pod", name, "-n", "default")["status"] for name in ("on-gvisor", "on-runc")}
    local.kubectl("delete", "runtimeprofile", "spare", "broken", "--wait=true")
    wait_until(
        lambda: "spare" not in local.kubectl("get", "runtimeclass", "-o", "name"),
        120,
        "RuntimeClass spare deleted",
        interval=1,
    )
    assert "broken" not in local.kubectl("get", "runtimeclass", "-o", "name")
    wait_until(lambda: "handler.kubehull.io/spare" not in node_labels(local), 120, "label spare removed", interval=1)
    for name, status in before.items():
        now = get(local, "pod", name, "-n", "default")["status"]
        assert now["phase"] == "Running"
        assert now["containerStatuses"][0]["containerID"] == status["containerStatuses"][0]["containerID"]
        assert now["containerStatuses"][0]["restartCount"] == 0
    local.kubectl("delete", "pod", "-n", "default", "on-broken", "--wait=false")


def test_hulld_killed_and_restarted_keeps_pods_and_serves_new_ones(env: Environment) -> None:
    local = env.local
    before = {name: get(local, "pod", name, "-n", "default")["status"] for name in ("on-gvisor", "on-runc")}
    local.hulld.kill()
    local.hulld.start()
    wait_until(local.node_ready, 120, "the node Ready again", interval=1)
    # Pulled again (Always): the restarted hulld serves the image service too (and its pull metrics start anew).
    apply(local, pod("after-restart", env.image, "runc", "echo alive; sleep 100000", pull="Always"))
    try:
        wait_until(functools.partial(pod_running, local, "after-restart"), 120, "a new pod Running", interval=1)
    except AssertionError:
        print(local.kubectl("describe", "pod", "-n", "default", "after-restart"))
        print(local.kubectl("get", "noderuntime", "-o", "yaml"))
        print(local.kubectl("logs", "-n", deploy.NAMESPACE, "-l", "app.kubernetes.io/component=agent", "--tail=60"))
        raise
    wait_until(lambda: "alive" in log_of(local, "after-restart"), 120, "its log", interval=1)
    time.sleep(5)  # long enough for the kubelet to have noticed a container that died with hulld
    for name, status in before.items():
        now = get(local, "pod", name, "-n", "default")["status"]
        assert now["phase"] == "Running", now
        assert now["containerStatuses"][0]["containerID"] == status["containerStatuses"][0]["containerID"]
        assert now["containerStatuses"][0]["restartCount"] == 0


DASHBOARD_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "10m",
    "${__range}": "10m",
}
# Panels over failures that did not happen in this run have nothing to show; every other query must.
EMPTY_WHEN_NOTHING_FAILED = re.compile(r"error|fail")


def dashboard_queries() -> list[tuple[str, str]]:
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    queries.append((f"{dashboard['title']} / {panel.get('title')}", target["expr"]))
    return queries


def instantiate(expression: str) -> str:
    for variable, value in DASHBOARD_VARIABLES.items():
        expression = expression.replace(variable, value)
    # Template variables select everything ("All").
    return re.sub(r'=~?\s*"\$\{?\w+\}?"', '=~".*"', expression)


def test_prometheus_scrapes_everything_and_dashboards_show_data(env: Environment) -> None:
    scraper = env.prometheus

    def all_up() -> bool:
        targets = scraper.targets()
        return len(targets) >= 4 and all(target["health"] == "up" for target in targets)

    wait_until(all_up, 60, "every target scraped", interval=1)
    jobs = {target["labels"]["job"] for target in scraper.targets()}
    assert jobs == {"kubehull-operator", "kubehull-agent", "hulld"}
    # The streaming panels need a session since hulld's last start (an earlier test restarts it, which resets its
    # counters, and its old samples may have aged out of the rate window): make one here.
    assert env.local.kubectl("exec", "-n", "default", "on-runc", "--", "echo", "scraped").strip() == "scraped"
    time.sleep(10)  # a few scrapes, so rates have two points
    empty = []
    queries = dashboard_queries()
    assert len(queries) > 20
    for title, expression in queries:
        result = scraper.query(instantiate(expression))
        if not result and not EMPTY_WHEN_NOTHING_FAILED.search(f"{title.lower()} {expression}"):
            empty.append(f"{title}: {expression}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    running = scraper.query('sum by (handler) (hulld_containers{state="running"})')
    by_handler = {sample["metric"]["handler"]: float(sample["value"][1]) for sample in running}
    assert by_handler.get("gvisor", 0) >= 1, by_handler
    assert by_handler.get("runc", 0) >= 1, by_handler


def hulld_processes() -> dict[int, str]:
    """Every live hulld on this machine (any PID namespace, not kind's nodes): pid → command line."""
    return {
        pid: " ".join(arguments)
        for pid, arguments in processes.machine_processes().items()
        if "-m" in arguments and "hulld" in arguments
    }


def test_every_pod_ran_on_hulld(env: Environment) -> None:
    local = env.local
    node = get(local, "node", local.node_name)
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("hulld://")
    pods = get(local, "pods", "--all-namespaces")["items"]
    chart_pods = [item for item in pods if item["metadata"]["namespace"] == deploy.NAMESPACE]
    assert {item["metadata"]["labels"]["app.kubernetes.io/component"] for item in chart_pods} == {"operator", "agent"}
    for item in pods:
        for status in item["status"].get("containerStatuses", []):
            if status.get("containerID"):
                assert status["containerID"].startswith("hulld://"), (item["metadata"]["name"], status)
    agent_logs = local.kubectl("logs", "-n", deploy.NAMESPACE, "-l", "app.kubernetes.io/component=agent", "--tail=-1")
    assert "adopted" in agent_logs, agent_logs  # the agent adopted the node's hulld ...
    assert local.hulld.process is not None
    assert local.hulld.pid() == local.hulld.process.popen.pid  # ... the harness's, still the only one
    running = hulld_processes()
    assert list(running) == [local.hulld.pid()], running
    print("timings:", json.dumps({key: round(value, 1) for key, value in env.timings.items()}))
