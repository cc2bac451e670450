"""Operator scale benchmark: thousands of Nodes, many RuntimeProfiles, simulated node agents, a real
kube-apiserver; prints figures.

    .venv/bin/python tests/benchmarks/bench_operator.py [--nodes 5000] [--profiles 20] [--baseline REV --rounds N]

The Nodes are plain Node objects (no kubelet, no kwok: the operator reads only their names and labels). A
simulated agent per node (one watch on NodeRuntimes and a pool of writers in this process) reports every
handler of each new NodeRuntime generation ready, as the node agent does after probing, so the operator labels
the nodes. For each profile (each selecting every node, maxUnavailable 100%) it measures the time from creating
the profile to its RuntimeClass, the time until every NodeRuntime carries the handler, the longest time from an
agent's report to the node's label, and the API writes the operator made for the change (from the API server's
own apiserver_request_total, less the benchmark's and the simulated agents' writes, the operator's lease
renewals and the API server's own endpoint updates). Then it changes one profile and counts again. Last, the
operator's peak RSS.
The peer (``writes_peer/``, Go, standard library, built with the toolchain's Go each run): the last profile's
change made with nothing but its writes (each NodeRuntime patched with the handler list the operator wrote, each
node labelled once its agent reported) from a compiled HTTP/2 client, in a second cluster set up the same way
and brought to where the operator's was before that change (NodeRuntimes carrying the earlier profiles' handlers,
reported ready, nodes labelled), so the last rows side by side show what this machine's API server allows any
controller for that change (``--no-peer`` skips it).
``--baseline REV`` runs the operator of another revision too, alternating with this checkout's (each in a fresh
cluster, ``--rounds`` times each): the machine's speed drifts between runs minutes apart by more than most
changes gain, so a change is measured against its baseline within one run.
Targets (issue #16): RuntimeClass <= 1 s, all NodeRuntimes <= 30 s, every node labelled <= 60 s after its
agent reports, writes <= 2 x affected nodes + 5 (spec and label), RSS <= 300 MiB.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import functools
import json
import os
import random
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "e2e"))

from kubehull_api.noderuntime import HandlerConfig, HandlerStatus  # noqa: E402
from kubehull_harness import apiserver, etcd, processes, toolchain  # noqa: E402

GROUP, VERSION = "kubehull.io", "v1alpha1"
RELEASE, NAMESPACE = "kubehull", "kubehull"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
# Lease renewals, the API server's own endpoint reconciler, and the simulated agents' status reports: writes
# that are not the operator's answer to a profile change.
NOT_OURS = Counter({"leases": 10**9, "endpoints": 10**9, "endpointslices": 10**9, "noderuntimes/status": 10**9})
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}
HANDLER_LABEL = "handler.kubehull.io/"
BINARY_VERSION = "runc version 1.1.5+ds1"  # what a report carries: Debian's runc, as the agent reads it
LIST_PAGE = 500
REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$", re.MULTILINE)


def writes(server: apiserver.KubeAPIServer) -> Counter[str]:
    """Write requests served so far, by resource (from the API server's metrics)."""
    context = ssl.create_default_context(cafile=str(server.ca.cert_path))
    admin = server.work_dir / "pki"
    context.load_cert_chain(str(admin / "admin.crt"), str(admin / "admin.key"))
    with urllib.request.urlopen(f"{server.url}/metrics", context=context, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for match in REQUEST_LINE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("verb") in WRITE_VERBS:
            resource = labels.get("resource", "") + ("/" + labels["subresource"] if labels.get("subresource") else "")
            counts[resource] += int(float(match["value"]))
    return counts


def settle(server: apiserver.KubeAPIServer, quiet: float = 2.0) -> Counter[str]:
    """Wait until no write (other than lease renewals) happened for ``quiet`` seconds; the counts then."""
    last = writes(server)
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < quiet:
        time.sleep(0.25)
        now = writes(server)
        if +(now - last) - NOT_OURS != Counter():
            last, stable_since = now, time.monotonic()
    return last


class _GoneError(Exception):
    """The API server no longer has the resourceVersion a watch was to resume from (410 Gone): list again."""


class Reflection:
    """List a kind (paged), then watch it from the list's resourceVersion, each watch resuming from the last
    version seen (bookmarks included), listing again only on 410 Gone, as a reflector in client-go does (and
    the node agent): a watch restarted without a version would replay every object, a cost no real client
    makes the API server pay. Raw JSON, not the client's models: the simulated agents share the cores with the
    API server. ``on_event(type, object)`` gets the listed objects as ADDED."""

    def __init__(
        self, list_call: Callable[..., Any], on_event: Callable[[str, dict[str, Any]], None], stop: threading.Event
    ) -> None:
        self._list_call, self._on_event, self._stop = list_call, on_event, stop

    def run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
            except _GoneError:
                version = None
            except ApiException as error:
                if error.status == 410:
                    version = None
                else:
                    time.sleep(1)
            # The server went (watch again), or the benchmark is over (its writers are gone).
            except (urllib3.exceptions.HTTPError, RuntimeError):
                time.sleep(1)

    def _list(self) -> str:
        page_token: str | None = None
        while True:
            response = self._list_call(limit=LIST_PAGE, _continue=page_token, _preload_content=False)
            page = json.loads(response.data)
            for item in page.get("items") or []:
                self._on_event("ADDED", item)
            page_token = page["metadata"].get("continue")
            if not page_token:
                return str(page["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        response = self._list_call(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            # As client-go's reflector: 5 to 10 minutes, so thousands of watches do not all end at once.
            timeout_seconds=random.randint(300, 600),  # noqa: S311
            _preload_content=False,
        )
        try:
            for line in watch.watch.iter_resp_lines(response):
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    if event["object"].get("code") == 410:
                        raise _GoneError
                    raise RuntimeError(f"watch: {event['object'].get('message')}")
                version = event["object"]["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    self._on_event(event["type"], event["object"])
        finally:
            response.release_conn()
        return version


class Agents:
    """A simulated node agent for every node: each new NodeRuntime generation is reported with all its handlers
    ready, each report as the node agent writes it (configDigest, binary version, probe time and duration; empty
    texts left out). Records when each node's report of each handler was written, and when the operator's label
    for it appeared on the node."""

    def __init__(self, api: Any) -> None:
        self.custom: Any = k8s.CustomObjectsApi(api)
        self.core: Any = k8s.CoreV1Api(api)
        self.reported: dict[tuple[str, str], float] = {}
        self.carried: dict[tuple[str, str], dict[str, float]] = {}
        """(handler, its options as JSON) → node → when the node's NodeRuntime first carried it (watched)."""
        self.node_runtimes: set[str] = set()
        self.labelled: dict[tuple[str, str], float] = {}
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(16)
        self._stop = threading.Event()
        list_node_runtimes = functools.partial(self.custom.list_cluster_custom_object, GROUP, VERSION, "noderuntimes")
        for reflection in (
            Reflection(list_node_runtimes, self._node_runtime_event, self._stop),
            Reflection(self.core.list_node, self._node_event, self._stop),
        ):
            threading.Thread(target=reflection.run, daemon=True).start()

    def _node_runtime_event(self, kind: str, item: dict[str, Any]) -> None:
        name, generation = item["metadata"]["name"], item["metadata"].get("generation", 0)
        now = time.monotonic()
        with self._lock:
            self.node_runtimes.add(name)
            for entry in item.get("spec", {}).get("handlers", []):
                options = json.dumps(entry.get("options", {}), sort_keys=True)
                self.carried.setdefault((entry["name"], options), {}).setdefault(name, now)
            if kind == "DELETED" or self._generations.get(name, 0) >= generation:
                return
            self._generations[name] = generation
        self._pool.submit(self._report, item)

    def _report(self, item: dict[str, Any]) -> None:
        name = item["metadata"]["name"]
        handlers = [_handler(json.dumps(entry, sort_keys=True)) for entry in item["spec"].get("handlers", [])]
        probed = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        reports = [
            HandlerStatus(
                name=handler.name,
                config_digest=handler.runtime_digest(),
                ready=True,
                binary_version=BINARY_VERSION,
                last_probe_time=probed,
                probe_duration_seconds=0.123,
            )
            for handler in handlers
        ]
        status = {
            "observedGeneration": item["metadata"]["generation"],
            "runtime": {"name": "hulld", "version": "bench", "ready": True},
            "handlers": [report.wire() for report in reports],
            "handlersReady": f"{len(reports)}/{len(reports)}",
        }
        try:
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, "noderuntimes", name, {"status": status}, _content_type="application/merge-patch+json"
            )
        except ApiException:
            return  # a newer generation is on its way: its own report follows
        now = time.monotonic()
        with self._lock:
            for handler in handlers:
                self.reported.setdefault((name, handler.name), now)

    def _node_event(self, _kind: str, item: dict[str, Any]) -> None:
        metadata = item["metadata"]
        now = time.monotonic()
        with self._lock:
            for label in metadata.get("labels", {}):
                if label.startswith(HANDLER_LABEL):
                    self.labelled.setdefault((metadata["name"], label[len(HANDLER_LABEL) :]), now)

    def carried_by(self, handler: str, options: dict[str, str], nodes: int) -> float | None:
        """When the last node's NodeRuntime came to carry ``handler`` with ``options`` (None before all did).
        Watched, not listed: listing thousands of NodeRuntimes a few times a second would load the API server
        more than the operator does."""
        with self._lock:
            times = self.carried.get((handler, json.dumps(options, sort_keys=True)), {})
            return max(times.values()) if len(times) >= nodes else None

    def reports(self, handler: str) -> int:
        """How many nodes' agents have reported ``handler``."""
        with self._lock:
            return sum(1 for _node, reported in self.reported if reported == handler)

    def label_delays(self, handler: str, nodes: int) -> list[float] | None:
        """Each node's time from its report to its label, once all are labelled (None before)."""
        with self._lock:
            pairs = [(node, h) for node, h in self.labelled if h == handler]
            if len(pairs) < nodes:
                return None
            return [self.labelled[pair] - self.reported.get(pair, self.labelled[pair]) for pair in pairs]

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


@functools.lru_cache(maxsize=1024)
def _handler(entry: str) -> HandlerConfig:
    """Parsed once per distinct entry: the simulated agents share this machine's cores with the operator and
    the API server, unlike real ones."""
    return HandlerConfig.model_validate_json(entry)


def operator_account(server: apiserver.KubeAPIServer, kubectl: str) -> Path:
    """The chart's RBAC applied (its service accounts, roles and bindings, the uninstall hook's aside), and a
    kubeconfig with the operator's service-account token: the operator is authenticated and authorized as in a
    cluster (a client certificate would cost the API server a certificate check on every request)."""
    rendered = processes.run(
        [toolchain.binary("helm"), "template", RELEASE, REPO / "charts" / "kubehull", f"--namespace={NAMESPACE}"]
    ).stdout
    rbac = [
        document
        for document in yaml.safe_load_all(rendered)
        if document and document["kind"] in RBAC_KINDS and not document["metadata"]["name"].endswith("-uninstall")
    ]
    processes.run([kubectl, f"--kubeconfig={server.kubeconfig}", "create", "namespace", NAMESPACE])
    manifest = yaml.safe_dump_all(rbac)
    processes.run([kubectl, f"--kubeconfig={server.kubeconfig}", "apply", "-f", "-"], input=manifest)
    return server.service_account_kubeconfig(NAMESPACE, f"{RELEASE}-operator")


def client(server: apiserver.KubeAPIServer, connections: int) -> Any:
    """An API client whose pool keeps a connection for each of ``connections`` threads."""
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(server.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    return k8s.ApiClient(configuration)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) each process has used; "agents" is this process: the simulated agents."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {"agents": time.process_time()}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / tick
    return used


def machine_ticks() -> tuple[int, int]:
    """The machine's CPU time so far, in clock ticks: all of it, and the part its hypervisor gave to other guests
    (steal): on a shared host that part varies from run to run, and with it every figure here."""
    fields = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields), fields[7]


def _api_server_cpu_profile(
    kubectl: str, server: apiserver.KubeAPIServer, into: Path, seconds: int
) -> subprocess.Popen[bytes]:
    """The API server's own CPU profiler (its /debug/pprof), run for ``seconds`` in the background."""
    return subprocess.Popen(
        [kubectl, f"--kubeconfig={server.kubeconfig}", "get", "--raw", f"/debug/pprof/profile?seconds={seconds}"],
        stdout=into.open("wb"),
    )


HEADER = f"{'change':<16}{'to RuntimeClass':>17}{'to all nodes':>14}{'to label':>10}{'API writes':>12}   budget"


def _row(
    label: str, rc: float, everything: float, label_delay: float, count: int, caused: Counter[str], nodes: int
) -> str:
    rc_text = "-" if rc != rc else f"{rc * 1000:.0f} ms"
    delay_text = "-" if label_delay != label_delay else f"{label_delay:.1f} s"
    budget = 2 * nodes + 5
    return f"{label:<16}{rc_text:>17}{everything:>12.1f} s{delay_text:>10}{count:>12}   {budget:>6}  {dict(caused)}"


class Cluster:
    """etcd and an API server with kubehull's CRDs (from ``crds``) and the chart's RBAC, ``nodes`` plain Nodes and
    a simulated agent for each; torn down on exit."""

    def __init__(self, work: Path, nodes: int, crds: Path) -> None:
        self.work, self.nodes = work, nodes
        self.logs = work / "logs"
        self.store = etcd.start(work, self.logs)
        self.server = apiserver.start(work, self.logs, self.store.client_url)
        self.agents: Agents | None = None
        try:
            self.kubectl = str(toolchain.binary("kubectl"))
            self._kubectl("apply", "-f", crds)
            established = ("crd/runtimeprofiles.kubehull.io", "crd/noderuntimes.kubehull.io")
            self._kubectl("wait", "--for=condition=Established", *established)
            self.operator_kubeconfig = operator_account(self.server, self.kubectl)
            api = client(self.server, 16)
            self.custom: Any = k8s.CustomObjectsApi(api)
            self.node_api: Any = k8s.NodeV1Api(api)
            self.core: Any = k8s.CoreV1Api(api)
            started = time.monotonic()

            def create_node(index: int) -> Any:
                body = {"metadata": {"name": f"node-{index:04d}", "labels": {"zone": f"z{index % 4}"}}}
                return self.core.create_node({"apiVersion": "v1", "kind": "Node", **body})

            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                self.node_uids = {node.metadata.name: node.metadata.uid for node in pool.map(create_node, range(nodes))}
            print(f"created {nodes} Nodes in {time.monotonic() - started:.1f}s")
            self.agents = Agents(client(self.server, 16))
        except BaseException:
            self.close()
            raise

    def _kubectl(self, *args: str | Path) -> None:
        processes.run([self.kubectl, f"--kubeconfig={self.server.kubeconfig}", *args])

    def pids(self) -> dict[str, int]:
        return {"API server": self.server.process.popen.pid, "etcd": self.store.process.popen.pid}

    def close(self) -> None:
        if self.agents is not None:
            self.agents.stop()
        self.server.stop()
        self.store.stop()
        subprocess.run(["rm", "-rf", str(self.work)], check=False)


Row = tuple[str, float, float, float, int, Counter[str]]
MEASURE_TIMEOUT = 900


def _runtime_class(cluster: Cluster, name: str) -> bool | None:
    """True once the RuntimeClass exists (None before)."""
    try:
        cluster.node_api.read_runtime_class(name)
    except ApiException:
        return None
    return True


def measure(
    cluster: Cluster,
    label: str,
    handler: str,
    options: dict[str, str],
    change: Callable[[], object],
    runtime_class: bool = False,
    writer_failed: Callable[[], str | None] = lambda: None,
) -> Row:
    """Make ``change``, which brings ``handler`` with ``options`` to every node (a new handler without options:
    and its label), and measure it; with ``runtime_class``, the time to the handler's RuntimeClass too.
    ``writer_failed`` says why the writer making the change is gone (None while it runs)."""
    agents = cluster.agents
    assert agents is not None
    before = settle(cluster.server)
    started = time.monotonic()
    change()

    def wait_for(what: str, result: Callable[[], Any], interval: float = 0.25) -> Any:
        while (value := result()) is None:
            if failure := writer_failed():
                raise RuntimeError(f"{label}: waiting for {what}: {failure}")
            if time.monotonic() - started > MEASURE_TIMEOUT:
                raise TimeoutError(f"{label}: no {what} after {MEASURE_TIMEOUT} s")
            time.sleep(interval)
        return value

    to_runtime_class = float("nan")
    if runtime_class:
        wait_for("RuntimeClass", lambda: _runtime_class(cluster, handler), interval=0.005)
        to_runtime_class = time.monotonic() - started
    last = wait_for("every NodeRuntime", lambda: agents.carried_by(handler, options, cluster.nodes))
    label_delay = float("nan")
    if not options:  # a new handler: every node gets its label
        label_delay = max(wait_for("every label", lambda: agents.label_delays(handler, cluster.nodes)))
    caused = settle(cluster.server) - before - NOT_OURS - Counter({"runtimeprofiles": 1})
    return (label, to_runtime_class, last - started, label_delay, sum(caused.values()), caused)


def profile_name(index: int) -> str:
    """The ``index``-th profile's name, which is its handler's too."""
    return f"bench{index}"


def profile(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RuntimeProfile",
        "metadata": {"name": name},
        "spec": {"handler": name, "runtime": {"engine": "runc"}, "rollout": {"maxUnavailable": "100%"}},
    }


def run_operator(
    cluster: Cluster, profiles: int, cpu_profile_file: Path | None, source: Path | None = None
) -> tuple[list[Row], list[dict[str, Any]], list[str]]:
    """kubehull's operator against ``cluster``: ``profiles`` profiles created one after another, then the first
    one changed. The rows, the handler list it wrote for the last profile's change, and its RSS and CPU figures.
    ``source``: a directory holding another build's ``kubehull_operator`` and ``kubehull_api`` (default: this
    checkout's)."""
    assert cluster.agents is not None
    agents = cluster.agents
    env = {**os.environ, "KUBECONFIG": str(cluster.operator_kubeconfig), "POD_NAMESPACE": NAMESPACE}
    if source is not None:
        env["PYTHONPATH"] = str(source)  # ahead of the editable install's finder
    command = [sys.executable, "-m", "kubehull_operator", "--metrics-port=0", "--health-endpoint="]
    operator = processes.ManagedProcess("operator", command, cluster.logs, env=env)
    try:
        started = time.monotonic()
        operator.wait_ready(lambda: len(agents.node_runtimes) >= cluster.nodes, 600, "done creating NodeRuntimes")
        print(f"operator created {cluster.nodes} NodeRuntimes in {time.monotonic() - started:.1f}s")
        settle(cluster.server)

        rows = []
        pids = {**cluster.pids(), "operator": operator.popen.pid}
        cpu_before, ticks_before, changes_started = cpu_seconds(pids), machine_ticks(), time.monotonic()
        for index in range(profiles):
            name = profile_name(index)
            profiling = None
            if index == 0 and cpu_profile_file:
                profiling = _api_server_cpu_profile(cluster.kubectl, cluster.server, cpu_profile_file, seconds=30)
            create = functools.partial(
                cluster.custom.create_cluster_custom_object, GROUP, VERSION, "runtimeprofiles", profile(name)
            )
            row = measure(cluster, f"create {name}", name, {}, create, runtime_class=True)
            rows.append(row)
            print(_row(*row, cluster.nodes), flush=True)
            if profiling is not None:
                profiling.wait()
        last = cluster.custom.get_cluster_custom_object(GROUP, VERSION, "noderuntimes", "node-0000")
        handlers: list[dict[str, Any]] = last["spec"]["handlers"]

        patch = {"spec": {"runtime": {"options": {"systemdCgroup": "true"}}}}
        update = functools.partial(
            cluster.custom.patch_cluster_custom_object,
            GROUP,
            VERSION,
            "runtimeprofiles",
            "bench0",
            patch,
            _content_type="application/merge-patch+json",
        )
        row = measure(cluster, "update bench0", "bench0", {"systemdCgroup": "true"}, update)
        rows.append(row)

        cpu = {name: seconds - cpu_before[name] for name, seconds in cpu_seconds(pids).items()}
        total, stolen = (after - before for after, before in zip(machine_ticks(), ticks_before, strict=True))
        changes = time.monotonic() - changes_started
        status = Path(f"/proc/{operator.popen.pid}/status").read_text()
        peak_rss = int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024  # type: ignore[index]
        shares = ", ".join(f"{name} {seconds / changes:.0%}" for name, seconds in cpu.items())
        figures = [
            f"operator peak RSS {peak_rss:.0f} MiB (VmHWM)",
            f"CPU while the profiles changed ({changes:.0f} s, {os.cpu_count()} cores): {shares} of a core; "
            f"{stolen / total:.0%} of the machine's CPU time stolen by its hypervisor",
        ]
        return rows, handlers, figures
    finally:
        operator.stop()


def run_peer(cluster: Cluster, handlers: list[dict[str, Any]], new: str) -> Row:
    """The operator's last change made by the peer (writes_peer/), which brought handler ``new`` to every node:
    NodeRuntimes created as the operator creates them, carrying the other ``handlers``, reported ready by the
    agents, the nodes labelled with them; then the peer's patches (``handlers`` whole) and labels for ``new``."""
    assert cluster.agents is not None
    agents = cluster.agents
    earlier = [handler for handler in handlers if handler["name"] != new]
    labels = {f"{HANDLER_LABEL}{handler['name']}": "true" for handler in earlier}

    def set_up(node: str) -> None:
        owner = {"apiVersion": "v1", "kind": "Node", "name": node, "uid": cluster.node_uids[node]}
        body = {"metadata": {"name": node, "ownerReferences": [owner]}, "spec": {"handlers": earlier}}
        cluster.custom.create_cluster_custom_object(
            GROUP, VERSION, "noderuntimes", {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeRuntime", **body}
        )
        if labels:
            cluster.core.patch_node(node, {"metadata": {"labels": labels}})

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(set_up, cluster.node_uids))
    while len(agents.node_runtimes) < cluster.nodes or any(
        agents.reports(handler["name"]) < cluster.nodes for handler in earlier
    ):
        time.sleep(0.25)

    peer = cluster.work / "writes-peer"
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -trimpath", "GOWORK": "off"}
    processes.run(["go", "build", "-o", peer, "."], cwd=Path(__file__).with_name("writes_peer"), env=env)
    kubeconfig = yaml.safe_load(cluster.operator_kubeconfig.read_text())
    token = cluster.work / "operator.token"
    token.write_text(kubeconfig["users"][0]["user"]["token"])
    command = [
        str(peer),
        f"--server={cluster.server.url}",
        f"--ca={cluster.server.ca.cert_path}",
        f"--token={token}",
        f"--handler={new}",
        f"--handlers={json.dumps(handlers)}",
        f"--nodes={cluster.nodes}",
    ]
    running: list[subprocess.Popen[str]] = []

    def start() -> None:
        running.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))

    def failed() -> str | None:
        code = running[0].poll() if running else None
        return None if code in (None, 0) else f"the peer exited with {code}"

    row = measure(cluster, f"peer {new}", new, {}, start, writer_failed=failed)
    output, _ = running[0].communicate(timeout=600)
    print(f"peer's own clock: {output.strip()}")
    return row


def fresh_cluster(nodes: int, crds: Path = REPO / "crds") -> contextlib.closing[Cluster]:
    return contextlib.closing(Cluster(Path(tempfile.mkdtemp(prefix="kubehull-bench-")), nodes, crds))


def baseline_source(revision: str, scratch: contextlib.ExitStack) -> Path:
    """The operator's packages as they are at ``revision``, in a temporary directory (its CRDs beside them)."""
    directory = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="kubehull-baseline-")))
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "operator", "crds"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory / "operator"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--profiles", type=int, default=20)
    parser.add_argument("--no-peer", action="store_true", help="measure the operator only")
    parser.add_argument(
        "--api-server-cpu-profile",
        type=Path,
        metavar="FILE",
        help="write the API server's CPU profile over the first profile change here (go tool pprof FILE)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the operator of git revision REV, alternating with this checkout's, each in a fresh cluster",
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --baseline: how many times each runs")
    args = parser.parse_args()

    with contextlib.ExitStack() as scratch:
        builds: dict[str, Path | None] = {"this checkout": None}
        if args.baseline:
            builds = {args.baseline: baseline_source(args.baseline, scratch), **builds}
        runs: list[tuple[str, list[Row], list[str]]] = []
        for round_number in range(1, (args.rounds if args.baseline else 1) + 1):
            for build, source in builds.items():
                print(f"== {build}, round {round_number}", flush=True)
                crds = REPO / "crds" if source is None else source.parent / "crds"
                with fresh_cluster(args.nodes, crds) as cluster:
                    rows, handlers, figures = run_operator(cluster, args.profiles, args.api_server_cpu_profile, source)
                runs.append((f"{build}, round {round_number}", rows, figures))
    if not args.no_peer:
        with fresh_cluster(args.nodes) as cluster:
            runs.append(("peer", [run_peer(cluster, handlers, profile_name(args.profiles - 1))], []))
    print()
    for label, rows, figures in runs:
        print(f"{label}:")
        print(HEADER)
        for row in rows:
            print(_row(*row, args.nodes))
        worst = max((row[3] for row in rows if row[3] == row[3]), default=float("nan"))
        print(f"{args.nodes} nodes, {args.profiles} profiles; slowest label after its report: {worst:.1f} s")
        print("\n".join(figures))
        print()
    print(
        "targets: RuntimeClass <= 1 s; all NodeRuntimes <= 30 s; labelled <= 60 s after the report; "
        "writes <= 2 x affected nodes + 5; RSS <= 300 MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
