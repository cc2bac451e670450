"""`python -m kubehull_harness up`: a local one-node Kubernetes cluster with kubehull installed, until Ctrl-C.

The cluster (cluster.py): etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and this machine as
its node: hulld started as a node image would start it, the kubelet on hulld's socket, kube-proxy, CNI. Then
kubehull the way users install it (deploy.py): its image built here and pushed to the cluster's registry, and
`helm install` of charts/kubehull. It prints how to reach everything, then waits; Ctrl-C or SIGTERM tears it
all down. ``--check`` also applies a runc RuntimeProfile, runs a pod with its RuntimeClass, and tears down.

`python -m kubehull_harness kind up [--check]`: a kind cluster built offline (kind.py) — a control plane and three
workers, two on hulld and one on containerd — with kubehull installed, until Ctrl-C; `kind down` removes what a
killed one left.

`python -m kubehull_harness vm build|run -- CMD`: the Debian VM of the cgroup v2 + systemd tests (vm.py).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from kubehull_harness import cluster, deploy, kind, mounts, toolchain, vm

REPO = Path(__file__).resolve().parents[2]
IMAGE_TAG = "0.1.0"
CHECK_PROFILE = """apiVersion: kubehull.io/v1alpha1
kind: RuntimeProfile
metadata: {name: runc}
spec: {handler: runc, runtime: {engine: runc, path: /usr/bin/runc}}
"""
CHECK_POD = """apiVersion: v1
kind: Pod
metadata: {name: hello, namespace: default}
spec:
  runtimeClassName: runc
  restartPolicy: Never
  containers: [{name: hello, image: IMAGE, command: [echo, hello from hulld]}]
"""


def up(work_dir: Path, check_only: bool, shared_image_build: Path | None = None) -> int:
    if work_dir.exists():  # a previous run's, perhaps killed: its mounts first
        mounts.unmount_under(work_dir)
        shutil.rmtree(work_dir)
    logs = work_dir / "logs"
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started = time.monotonic()
    with cluster.run(work_dir, logs) as local:
        print(f"cluster up in {time.monotonic() - started:.1f}s: node {local.node_name} on hulld", flush=True)
        image = deploy.build_and_push_image(local, IMAGE_TAG, shared_image_build)
        deploy.helm_install(local, image, f"agent.hostPid={local.host_pid}")
        print(f"kubehull installed in {time.monotonic() - started:.1f}s (image {image}, logs: {logs})")
        print(f"  export KUBECONFIG={local.kubeconfig}")
        print(f"  kubectl: {toolchain.binary('kubectl')}")
        print(f"  kubectl get pods -n {deploy.NAMESPACE}; kubectl get runtimeprofiles,noderuntimes,runtimeclasses")
        print(f"  RuntimeProfile examples: {REPO / 'docs/examples'} (gVisor's runsc: {toolchain.binary('runsc')})")
        if check_only:
            local.apply(CHECK_PROFILE)
            local.kubectl("wait", "--for=condition=Ready", "runtimeprofile/runc", "--timeout=120s")
            print("RuntimeProfile runc Ready:", local.kubectl("get", "runtimeprofile", "runc", "--no-headers").strip())
            local.apply(CHECK_POD.replace("IMAGE", image))
            local.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/hello", "--timeout=120s")
            print("pod hello ran under RuntimeClass runc:", local.kubectl("logs", "hello").strip())
            return 0
        print("Ctrl-C to stop and clean up.", flush=True)
        stop.wait()
        print("stopping...", flush=True)
    return 0


def kind_up(work_dir: Path, check_only: bool) -> int:
    shutil.rmtree(work_dir, ignore_errors=True)
    logs = work_dir / "logs"
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started = time.monotonic()
    with kind.run(work_dir, logs, REPO) as up:
        print(f"kind cluster up in {time.monotonic() - started:.1f}s: {up.nodes}", flush=True)
        image = deploy.build_and_push_image(up, IMAGE_TAG)
        deploy.helm_install(up, image)
        print(f"kubehull installed in {time.monotonic() - started:.1f}s (image {image}, logs: {logs})")
        print(f"  export KUBECONFIG={up.kubeconfig}")
        print(f"  kubectl: {toolchain.binary('kubectl')}")
        print(f"  a node's shell: DOCKER_HOST=unix://{kind.ENGINE_RUN / 'docker.sock'} docker exec -it NODE bash")
        if check_only:
            up.apply(CHECK_PROFILE)
            up.kubectl("wait", "--for=condition=Ready", "runtimeprofile/runc", "--timeout=300s", timeout=330)
            print("RuntimeProfile runc Ready:", up.kubectl("get", "runtimeprofile", "runc", "--no-headers").strip())
            return 0
        print("Ctrl-C to stop and clean up.", flush=True)
        stop.wait()
        print("stopping...", flush=True)
    return 0


def kind_down(work_dir: Path) -> int:
    engine = kind.start_engine(work_dir / "logs")
    try:
        kind.delete(engine)
        kind.remove_network(engine)
    finally:
        engine.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubehull_harness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start the local cluster with kubehull and keep it running until Ctrl-C")
    up_parser.add_argument(
        "--work-dir",
        type=Path,
        default=toolchain.cache_dir() / "cluster",
        help="state and logs of the running cluster (wiped at start)",
    )
    up_parser.add_argument("--check", action="store_true", help="bring it up, run a pod, tear it down")
    up_parser.add_argument(
        "--shared-image-build",
        type=Path,
        metavar="DIR",
        help="build kubehull's image in DIR the first time and reuse that build later (the tests' one per session; "
        "only while the checkout does not change)",
    )
    kind_parser = sub.add_parser("kind", help="a kind cluster (hulld and containerd workers) with kubehull")
    kind_parser.add_argument("action", choices=["up", "down"], help="up: until Ctrl-C; down: a killed run's leftovers")
    kind_parser.add_argument("--check", action="store_true", help="with up: bring it up, make a profile Ready, stop")
    kind_parser.add_argument("--work-dir", type=Path, default=toolchain.cache_dir() / "kind-cluster")
    vm_parser = sub.add_parser("vm", help="the Debian VM (systemd, cgroup v2) that tests boot")
    vm_parser.add_argument("action", choices=["build", "run"], help="build: its image; run: boot, run, shut down")
    vm_parser.add_argument("vm_command", nargs="*", help="with run: the shell command (after --)")
    args = parser.parse_args()
    if args.command == "vm":
        return run_in_vm(args.action, " ".join(args.vm_command))
    if args.command == "kind":
        return kind_up(args.work_dir, args.check) if args.action == "up" else kind_down(args.work_dir)
    return up(args.work_dir, args.check, args.shared_image_build)


def run_in_vm(action: str, command: str) -> int:
    if action == "build":
        print(f"VM image: {vm.build_image(Path('/dev/stderr')).directory}")
        return 0
    with (
        tempfile.TemporaryDirectory(prefix="kubehull-vm-") as scratch,
        vm.booted(Path(scratch), Path(scratch) / "logs", REPO) as booted,
    ):
        print(f"booted in {booted.boot_seconds:.1f}s", file=sys.stderr)
        done = booted.run(command or "true", check=False, timeout=3600)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())
