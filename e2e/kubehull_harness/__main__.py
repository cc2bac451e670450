"""`python -m kubehull_harness up`: bring up the local kubehull cluster by hand and keep it up until Ctrl-C.

Today the local cluster is the control plane the tests use (etcd + a secure, RBAC-enforcing kube-apiserver) and
the OCI registry with the test images. It prints how to reach both, then waits; Ctrl-C or SIGTERM tears it all
down. ``--check`` brings everything up, verifies it answers, and tears it down again (what CI runs).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from kubernetes import client as k8s

from kubehull_harness import apiserver, etcd, images, registry, toolchain


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
        served = registry.start(work_dir / "registry", logs)
        running.callback(served.stop)
        pushed = images.preload(served, work_dir / "images")
        version = k8s.VersionApi(server.api_client()).get_code()
        print(f"kubehull local cluster up in {time.monotonic() - started:.1f}s (logs: {logs})")
        print(f"  kube-apiserver {version.git_version} at {server.url}")
        print(f"  export KUBECONFIG={server.kubeconfig}")
        print(f"  kubectl: {toolchain.binary('kubectl')}")
        print(f"  registry: http://{served.host} with " + ", ".join(image.reference for image in pushed.values()))
        if check_only:
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
