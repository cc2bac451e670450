"""`python -m kubehull_harness up`: bring up the local kubehull cluster by hand and keep it up until Ctrl-C.

Today the local cluster is the control plane the tests use (etcd + a secure, RBAC-enforcing kube-apiserver)
with kubehull's CRDs and the kubehull operator running against it, and the OCI registry with the test images.
It prints how to reach them, then waits; Ctrl-C or SIGTERM tears it all down. ``--check`` brings everything
up, applies the example RuntimeProfiles, waits for their RuntimeClasses, and tears it down again.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from kubernetes import client as k8s

from kubehull_harness import apiserver, etcd, images, processes, registry, toolchain

REPO = Path(__file__).resolve().parents[2]


def up(work_dir: Path, check_only: bool) -> int:
    if work_dir.exists():
        shutil.rmtree(work_dir)
    logs = work_dir / "logs"
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started = time.monotonic()
    with contextlib.ExitStack() as running:
        store = etcd.start(work_dir, logs)
        running.callback(store.stop)
        server = apiserver.start(work_dir, logs, store.client_url)
        running.callback(server.stop)
        kubectl: list[processes.Arg] = [toolchain.binary("kubectl"), f"--kubeconfig={server.kubeconfig}"]
        processes.run([*kubectl, "apply", "-f", REPO / "crds"])
        processes.run([*kubectl, "wait", "--for=condition=Established", "crd/runtimeprofiles.kubehull.io"])
        operator = processes.ManagedProcess(
            "kubehull-operator",
            [
                sys.executable,
                "-m",
                "kubehull_operator",
                "--lease-namespace=default",
                "--metrics-port=0",
                "--health-endpoint=",
            ],
            logs,
            env={**os.environ, "KUBECONFIG": str(server.kubeconfig)},
        )
        running.callback(operator.stop)
        served = registry.start(work_dir / "registry", logs)
        running.callback(served.stop)
        pushed = images.preload(served, work_dir / "images")
        version = k8s.VersionApi(server.api_client()).get_code()
        print(f"kubehull local cluster up in {time.monotonic() - started:.1f}s (logs: {logs})")
        print(f"  kube-apiserver {version.git_version} at {server.url}")
        print(f"  export KUBECONFIG={server.kubeconfig}")
        print(f"  kubectl: {toolchain.binary('kubectl')}")
        print(f"  registry: http://{served.host} with " + ", ".join(image.reference for image in pushed.values()))
        print(f"  kubehull-operator running (log: {operator.log_path})")
        print(f"  try: kubectl apply -f {REPO / 'docs/examples'}; kubectl get runtimeprofiles,runtimeclasses")
        if check_only:
            processes.run([*kubectl, "apply", "-f", REPO / "docs/examples"])
            for example in sorted((REPO / "docs/examples").glob("*.yaml")):
                get = [*kubectl, "get", "runtimeclass", example.stem]
                operator.wait_ready(functools.partial(processes.run, get), 60, f"serving RuntimeClass {example.stem}")
            print("example RuntimeProfiles applied; their RuntimeClasses exist")
            return 0
        print("Ctrl-C to stop and clean up.", flush=True)
        stop.wait()
        print("stopping...", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubehull_harness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start the local cluster and keep it running until Ctrl-C")
    up_parser.add_argument(
        "--work-dir",
        type=Path,
        default=toolchain.cache_dir() / "cluster",
        help="state and logs of the running cluster (wiped at start)",
    )
    up_parser.add_argument("--check", action="store_true", help="bring it up, report, tear it down")
    args = parser.parse_args()
    return up(args.work_dir, args.check)


if __name__ == "__main__":
    sys.exit(main())
