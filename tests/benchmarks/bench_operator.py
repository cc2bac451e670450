"""Operator fan-out benchmark: 1000 Nodes, 5 RuntimeProfiles, a real kube-apiserver; prints figures.

    .venv/bin/python tests/benchmarks/bench_operator.py [--nodes 1000] [--profiles 5]

For each profile (each selecting every node, maxUnavailable 100%) it measures the time from creating the
profile to its RuntimeClass, the time until every NodeRuntime carries the handler, and the API writes the
change caused (from the API server's own apiserver_request_total, less the benchmark's single write, the
operator's lease renewals and the API server's own endpoint updates). Then it changes one profile and counts
again. Last, the operator's peak RSS.
Targets (issue #3): RuntimeClass ≤ 1 s, all NodeRuntimes ≤ 30 s, writes ≤ affected nodes + 5, RSS ≤ 200 MB.
No agent runs, so nodes stay "updating"; that is the fan-out this measures.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "e2e"))

from kubehull_harness import apiserver, etcd, processes, toolchain  # noqa: E402

GROUP, VERSION = "kubehull.io", "v1alpha1"
# Lease renewals, and the API server's own endpoint reconciler: writes that no profile change causes.
NOT_OURS = Counter({"leases": 10**9, "endpoints": 10**9, "endpointslices": 10**9})
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}
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


def carried(custom: Any, handler: str) -> int:
    items = custom.list_cluster_custom_object(GROUP, VERSION, "noderuntimes")["items"]
    return sum(any(entry["name"] == handler for entry in item["spec"].get("handlers", [])) for item in items)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--profiles", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kubehull-bench-"))
    logs = work / "logs"
    store = etcd.start(work, logs)
    server = apiserver.start(work, logs, store.client_url)
    operator = None
    try:
        kubectl = str(toolchain.binary("kubectl"))
        processes.run([kubectl, f"--kubeconfig={server.kubeconfig}", "apply", "-f", REPO / "crds"])
        processes.run(
            [
                kubectl,
                f"--kubeconfig={server.kubeconfig}",
                "wait",
                "--for=condition=Established",
                "crd/runtimeprofiles.kubehull.io",
                "crd/noderuntimes.kubehull.io",
            ]
        )
        api = server.api_client()
        api.configuration.connection_pool_maxsize = 32
        core: Any = k8s.CoreV1Api(api)
        custom: Any = k8s.CustomObjectsApi(api)
        node_api: Any = k8s.NodeV1Api(api)

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: core.create_node(
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "metadata": {"name": f"node-{i:04d}", "labels": {"zone": f"z{i % 4}"}},
                        }
                    ),
                    range(args.nodes),
                )
            )
        print(f"created {args.nodes} Nodes in {time.monotonic() - started:.1f}s")

        env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
        operator = processes.ManagedProcess(
            "operator",
            [
                sys.executable,
                "-m",
                "kubehull_operator",
                "--metrics-port=0",
                "--health-endpoint=",
                "--lease-namespace=default",
            ],
            logs,
            env=env,
        )
        started = time.monotonic()
        operator.wait_ready(
            lambda: len(custom.list_cluster_custom_object(GROUP, VERSION, "noderuntimes")["items"]) == args.nodes,
            120,
            "done creating NodeRuntimes",
        )
        print(f"operator created {args.nodes} NodeRuntimes in {time.monotonic() - started:.1f}s")
        settle(server)

        rows = []
        for index in range(args.profiles):
            name = handler = f"bench{index}"
            before = settle(server)
            started = time.monotonic()
            custom.create_cluster_custom_object(
                GROUP,
                VERSION,
                "runtimeprofiles",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "RuntimeProfile",
                    "metadata": {"name": name},
                    "spec": {"handler": handler, "runtime": {"engine": "runc"}, "rollout": {"maxUnavailable": "100%"}},
                },
            )
            while True:
                try:
                    node_api.read_runtime_class(name)
                    break
                except ApiException:
                    time.sleep(0.005)
            to_runtime_class = time.monotonic() - started
            while carried(custom, handler) < args.nodes:
                time.sleep(0.1)
            to_all_nodes = time.monotonic() - started
            after = settle(server)
            caused = after - before - NOT_OURS - Counter({"runtimeprofiles": 1})
            rows.append((f"create {name}", to_runtime_class, to_all_nodes, sum(caused.values()), caused))

        name = "bench0"
        before = settle(server)
        started = time.monotonic()
        custom.patch_cluster_custom_object(
            GROUP,
            VERSION,
            "runtimeprofiles",
            name,
            {"spec": {"runtime": {"options": {"systemdCgroup": "true"}}}},
            _content_type="application/merge-patch+json",
        )
        while True:
            items = custom.list_cluster_custom_object(GROUP, VERSION, "noderuntimes")["items"]
            if all(
                any(
                    entry["name"] == name and entry.get("options") == {"systemdCgroup": "true"}
                    for entry in item["spec"]["handlers"]
                )
                for item in items
            ):
                break
            time.sleep(0.1)
        to_all_nodes = time.monotonic() - started
        after = settle(server)
        caused = after - before - NOT_OURS - Counter({"runtimeprofiles": 1})
        rows.append((f"update {name}", float("nan"), to_all_nodes, sum(caused.values()), caused))

        status = Path(f"/proc/{operator.popen.pid}/status").read_text()
        peak_rss = int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024  # type: ignore[index]
        print()
        print(f"{'change':<16}{'to RuntimeClass':>17}{'to all nodes':>14}{'API writes':>12}   budget  breakdown")
        for label, rc, everything, count, caused in rows:
            budget = args.nodes + 5
            rc_text = "-" if rc != rc else f"{rc * 1000:.0f} ms"
            print(f"{label:<16}{rc_text:>17}{everything:>12.1f} s{count:>12}   {budget:>6}  {dict(caused)}")
        print(f"\noperator peak RSS: {peak_rss:.0f} MiB (VmHWM)")
        print("targets: RuntimeClass <= 1 s; all NodeRuntimes <= 30 s; writes <= affected nodes + 5; RSS <= 200 MB")
    finally:
        if operator is not None:
            operator.stop()
        server.stop()
        store.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
