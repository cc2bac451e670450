"""kubehull into the local cluster the way a user installs it: its image, then `helm install` of the chart.

The image is built here without pulling anything (node-agent/image/build.py assembles it from this machine's
files) and pushed to the cluster's registry, from which the kubelet pulls it through hulld.
"""

from __future__ import annotations

import fcntl
import sys
from pathlib import Path
from typing import Protocol

from kubehull_harness import images, processes, registry, toolchain


class Cluster(Protocol):
    """What installing needs of a cluster: the local one (cluster.py) or the VM's (vm_cluster.py)."""

    work_dir: Path
    registry: registry.Registry

    @property
    def kubeconfig(self) -> Path: ...

    def kubectl(self, *args: processes.Arg, timeout: float = 120, stdin: str | None = None) -> str: ...


REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "node-agent" / "image" / "build.py"
IMAGE_REPOSITORY = "kubehull/kubehull"
NAMESPACE = "kubehull-system"
RELEASE = "kubehull"


def build_and_push_image(local: Cluster, tag: str, shared_build: Path | None = None) -> str:
    """Build the image into an OCI layout and push it as ``tag``; returns its reference. With ``shared_build``
    (the pytest plugin's ``image_build_dir``) the layout there is built once, by the first caller, and reused by
    every later one, other workers' included: the checkout does not change during a test session. Without it
    (``kubehull up``) the image is built afresh under the cluster's work dir."""
    work_dir = local.work_dir / "image"
    work_dir.mkdir(parents=True, exist_ok=True)
    source = _built_once(shared_build) if shared_build else _build(work_dir)
    spec = images.ImageSpec(repository=IMAGE_REPOSITORY, tag=tag, cmd=())
    return images.push(source, spec, local.registry, work_dir).reference


def _build(directory: Path) -> str:
    """The image built into ``directory / "layout"``, labelled and tagged with kubehull's version: its skopeo
    source, ``oci:<layout>:<version>``."""
    built = processes.run([sys.executable, BUILD_SCRIPT, directory / "layout"], timeout=600)
    return built.stdout.strip().splitlines()[-1]


def _built_once(directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "source"
    with (directory / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held while the first caller builds: the others wait, then reuse it
        if not marker.exists():
            marker.write_text(_build(directory))
        return marker.read_text()


def helm_install(
    local: Cluster, image_reference: str, *extra_values: str, timeout: float = 300, upgrade: bool = False
) -> None:
    """`helm install --wait` (or `helm upgrade --wait`) with the image from the local registry: what helm waits
    for is ready (the operator's Deployment; a DaemonSet only beyond its maxUnavailable, so on a one-node
    cluster not the agent's pod)."""
    repository, tag = image_reference.rsplit(":", 1)
    processes.run(
        [
            toolchain.binary("helm"),
            f"--kubeconfig={local.kubeconfig}",
            "upgrade" if upgrade else "install",
            RELEASE,
            REPO / "charts" / "kubehull",
            f"--namespace={NAMESPACE}",
            *(() if upgrade else ("--create-namespace",)),
            f"--set=image.repository={repository}",
            f"--set=image.tag={tag}",
            *(f"--set={value}" for value in extra_values),
            "--wait",
            f"--timeout={int(timeout)}s",
        ],
        timeout=timeout + 30,
    )


def helm_uninstall(local: Cluster, timeout: float = 300) -> None:
    """`helm uninstall --wait`: its pre-delete hook first takes kubehull's handlers off the nodes."""
    processes.run(
        [
            toolchain.binary("helm"),
            f"--kubeconfig={local.kubeconfig}",
            "uninstall",
            RELEASE,
            f"--namespace={NAMESPACE}",
            "--wait",
            f"--timeout={int(timeout)}s",
        ],
        timeout=timeout + 30,
    )


def pod_ips(local: Cluster, component: str) -> list[str]:
    """The pod IPs of the chart's ``operator`` or ``agent`` pods."""
    output = local.kubectl(
        "get",
        "pods",
        f"--namespace={NAMESPACE}",
        f"--selector=app.kubernetes.io/component={component}",
        "--output=jsonpath={.items[*].status.podIP}",
    )
    return output.split()
