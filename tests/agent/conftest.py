"""Node agent tests: a real API server with kubehull's CRDs, where the test plays the operator (``Cluster``: Nodes
and NodeHandlers made as the operator makes them), and hulld's fixtures (a real hulld with pod networking, the
local registry). ``AgentProcess`` runs `kubehull-agent` against them; ``built_bundle`` is kubehull's bundle,
built once, and ``bundle_of_version`` a copy claiming another version."""

from __future__ import annotations

import os
import re
import shutil
import sys
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kubehull_agent import bundle
from kubehull_api.common import API_VERSION, GROUP, VERSION
from kubehull_api.engines import Engine, RuntimeType
from kubehull_api.nodehandler import FINALIZER, KIND, NODE_NAME_FIELD, PLURAL, HandlerConfig, object_name
from kubehull_harness import processes, toolchain
from kubehull_harness.apiserver import KubeAPIServer
from tests.hulld.conftest import Hulld, hulld_with_network

__all__ = [
    "AgentProcess",
    "Cluster",
    "built_bundle",
    "cluster",
    "handler_config",
    "hulld_with_network",
    "kubehull_crds",
    "kubelet_reports",
]

REPO = Path(__file__).resolve().parents[2]
MERGE_PATCH = "application/merge-patch+json"


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


class WithCoreApi(Protocol):
    core: Any


def kubelet_reports(cluster: WithCoreApi, node: str, runtime: str) -> None:
    """What a node's kubelet reports once registered: the CRI runtime it talks to (``<name>://<version>``), which
    the agent configures. A test's node has no kubelet: the test says it."""
    patch = {"status": {"nodeInfo": {"containerRuntimeVersion": runtime}}}
    # Raw: the client's model refuses a nodeInfo without the fields a real kubelet fills in too.
    cluster.core.patch_node_status(node, patch, _content_type=MERGE_PATCH, _preload_content=False)


def handler_config(name: str, engine: Engine, path: str, **settings: Any) -> HandlerConfig:
    runtime_type = RuntimeType.VM if engine == Engine.KATA else RuntimeType.OCI
    return HandlerConfig(
        name=name, profile=name, profile_generation=1, engine=engine, runtime_type=runtime_type, path=path, **settings
    )


class Cluster:
    """The API server as a node agent meets it, the operator played by the test: Nodes, and NodeHandlers created
    (with the agent's finalizer), changed and deleted as the operator does. Nodes carry the test's own prefix;
    they and their NodeHandlers are removed at the end."""

    def __init__(self, server: KubeAPIServer) -> None:
        self.server = server
        api = server.api_client()
        # Typed as Any: the tests pass and read plain dicts, which the client handles as they are.
        self.core: Any = k8s.CoreV1Api(api)
        self.custom: Any = k8s.CustomObjectsApi(api)
        self.prefix = f"t{uuid.uuid4().hex[:6]}"
        self.nodes: list[str] = []

    def create_node(self, suffix: str, runtime: str) -> str:
        """A Node whose kubelet reports using ``runtime`` (``<name>://<version>``), the runtime the agent
        configures. A test's node has no kubelet: the test says what it would report."""
        name = f"{self.prefix}-{suffix}"
        self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        self.nodes.append(name)
        kubelet_reports(self, name, runtime)
        return name

    def create_handler(self, node: str, handler: HandlerConfig, *finalizers: str) -> str:
        """``node``'s NodeHandler for ``handler``, held by the agent's finalizer (and ``finalizers``); its name."""
        name = object_name(node, handler.name)
        spec = {"nodeName": node, "handler": handler.model_dump(mode="json", by_alias=True, exclude_none=True)}
        metadata = {"name": name, "finalizers": [FINALIZER, *finalizers]}
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
        self.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        return name

    def patch(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, patch, _content_type=MERGE_PATCH)

    def delete(self, name: str) -> None:
        self.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)

    def node_handler(self, name: str) -> dict[str, Any] | None:
        """The NodeHandler; None once it is gone."""
        try:
            found: dict[str, Any] = self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def metadata(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)["metadata"]
        return found

    def status(self, name: str) -> dict[str, Any]:
        """What the agent wrote ({} before it has)."""
        return dict((self.node_handler(name) or {}).get("status") or {})

    def ready(self, *names: str) -> bool:
        return all(self.status(name).get("ready") is True for name in names)

    def cleanup(self) -> None:
        for node in self.nodes:
            listed = self.custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, field_selector=f"{NODE_NAME_FIELD}={node}"
            )
            for item in listed["items"]:
                self.patch(item["metadata"]["name"], {"metadata": {"finalizers": None}})
                if not item["metadata"].get("deletionTimestamp"):
                    self.delete(item["metadata"]["name"])
            self.core.delete_node(node)


@pytest.fixture(scope="session")
def kubehull_crds(kube_apiserver: KubeAPIServer) -> KubeAPIServer:
    kubectl = [str(toolchain.binary("kubectl")), f"--kubeconfig={kube_apiserver.kubeconfig}"]
    processes.run([*kubectl, "apply", "-f", REPO / "crds"])
    processes.run([*kubectl, "wait", "--for=condition=Established", "--timeout=30s", f"crd/{PLURAL}.{GROUP}"])
    return kube_apiserver


@pytest.fixture
def cluster(kubehull_crds: KubeAPIServer) -> Iterator[Cluster]:
    view = Cluster(kubehull_crds)
    yield view
    view.cleanup()


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

    def metric(self, name: str, labels: str = "") -> float:
        """One sample's value (``labels`` as the exposition writes them: ``handler="runc"``); 0 if there is none."""
        sample = f"{name}{{{labels}}}" if labels else name
        found = re.search(rf"^{re.escape(sample)} (\S+)$", self.metrics(), re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def probes(self, handler: str) -> float:
        """How many probes of ``handler`` came out ready."""
        return self.metric("kubehull_agent_probe_duration_seconds_count", f'handler="{handler}",result="ready"')

    def stop(self) -> None:
        self.process.stop()
