"""Node agent tests reuse the operator's and hulld's fixtures: a real API server with the operator, a real
hulld with pod networking and the local registry. ``AgentProcess`` runs `kubehull-agent` against them;
``built_bundle`` is kubehull's bundle, built once, and ``bundle_of_version`` a copy claiming another version."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from kubehull_agent import bundle
from kubehull_harness import processes
from kubehull_harness.apiserver import KubeAPIServer
from tests.hulld.conftest import Hulld, hulld_with_network
from tests.operator.conftest import Cluster, cluster, kubehull_crds, operator

__all__ = [
    "AgentProcess",
    "built_bundle",
    "cluster",
    "hulld_with_network",
    "kubehull_crds",
    "kubelet_reports",
    "operator",
]


@pytest.fixture(scope="session")
def built_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    destination = tmp_path_factory.mktemp("bundle") / "kubehull"
    bundle.build(destination)
    return destination


def bundle_of_version(built: Path, destination: Path, version: str) -> Path:
    """A copy of ``built`` whose hulld reports ``version``: what an upgrade installs."""
    shutil.copytree(built, destination, symlinks=True)
    (destination / "VERSION").write_text(f"{version}\n")
    module = destination / "site-packages" / "hulld" / "__init__.py"
    module.write_text(
        module.read_text().replace(
            f'__version__ = "{(built / "VERSION").read_text().strip()}"', f'__version__ = "{version}"'
        )
    )
    shutil.rmtree(module.parent / "__pycache__")  # the bundle's byte code is never checked against sources
    return destination


def kubelet_reports(cluster: Cluster, node: str, runtime: str) -> None:
    """What a node's kubelet reports once registered: the CRI runtime it talks to (``<name>://<version>``), which
    the agent checks is hulld. A test's node has no kubelet: the test says it."""
    patch = {"status": {"nodeInfo": {"containerRuntimeVersion": runtime}}}
    # Raw: the client's model refuses a nodeInfo without the fields a real kubelet fills in too.
    cluster.core.patch_node_status(node, patch, _content_type="application/merge-patch+json", _preload_content=False)


class AgentProcess:
    """One `kubehull-agent` host process serving ``node`` with a test's running hulld (no bundle: it installs
    nothing), or with none (``hulld=None``: a node whose kubelet uses another runtime, which ``options``
    name); its base configuration is a copy of hulld's (none without hulld), its log goes to test-logs/."""

    def __init__(
        self,
        server: KubeAPIServer,
        node: str,
        hulld: Hulld | None,
        probe_image: str,
        work_dir: Path,
        log_dir: Path,
        options: Sequence[str] = (),
    ) -> None:
        base = work_dir / "hulld-base.toml"
        if hulld is not None:
            shutil.copyfile(hulld.config_path, base)
            hulld_options = [
                f"--hulld-config={hulld.config_path}",
                f"--hulld-socket={hulld.socket}",
                f"--hulld-private-socket={hulld.private_socket}",
                f"--hulld-pid-file={hulld.work_dir / 'state' / 'hulld.pid'}",
            ]
        else:  # a node without hulld has no base configuration for it
            hulld_options = [
                f"--hulld-config={work_dir / 'hulld.toml'}",
                f"--hulld-private-socket={work_dir / 'none.sock'}",
            ]
        self.port = processes.free_port()
        self.process = processes.ManagedProcess(
            "kubehull-agent",
            [
                sys.executable,
                "-m",
                "kubehull_agent",
                f"--node-name={node}",
                f"--hulld-base-config={base}",
                *hulld_options,
                f"--probe-image={probe_image}",
                f"--probe-logs={work_dir / 'probe-logs'}",
                f"--http-address=127.0.0.1:{self.port}",
                *options,
            ],
            log_dir,
            env={**os.environ, "KUBECONFIG": str(server.kubeconfig)},
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as answer:
            text: str = answer.read().decode()
            return text

    def stop(self) -> None:
        self.process.stop()
