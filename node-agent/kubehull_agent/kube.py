"""The agent's only conversation with the API server: its own node's NodeRuntime, read, watched, and the
status written; and its own Node read, for the runtime its kubelet reports. Nothing else in the cluster is
written (the chart's RBAC and admission policy enforce it)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from kubehull_api.common import GROUP, VERSION
from kubehull_api.noderuntime import PLURAL, NodeRuntime


def api_client() -> k8s.ApiClient:
    if "KUBERNETES_SERVICE_HOST" in os.environ:
        k8s_config.load_incluster_config()
        return k8s.ApiClient()
    client: k8s.ApiClient = k8s_config.new_client_from_config()
    return client


class NodeRuntimes:
    def __init__(self, client: k8s.ApiClient, node: str) -> None:
        self.custom: Any = k8s.CustomObjectsApi(client)
        self.core: Any = k8s.CoreV1Api(client)
        self.node = node

    def kubelet_runtime(self) -> str:
        """The container runtime the node's kubelet reports using (``status.nodeInfo.containerRuntimeVersion``,
        ``<name>://<version>``); "" if it has reported none."""
        # Raw JSON: the client's model refuses a nodeInfo without every field, and one field is all that is read.
        answer = self.core.read_node(self.node, _preload_content=False)
        node = json.loads(answer.data)
        return str(node.get("status", {}).get("nodeInfo", {}).get("containerRuntimeVersion", ""))

    def get(self) -> NodeRuntime | None:
        try:
            return NodeRuntime.model_validate(self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, self.node))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def watch(self, timeout: int = 60) -> Iterator[NodeRuntime]:
        """Changes to this node's NodeRuntime for up to ``timeout`` seconds."""
        stream = watch.Watch().stream(
            self.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            field_selector=f"metadata.name={self.node}",
            timeout_seconds=timeout,
        )
        for event in stream:
            if event["type"] in ("ADDED", "MODIFIED"):
                yield NodeRuntime.model_validate(event["object"])

    def write_status(self, status: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, PLURAL, self.node, {"status": status}, _content_type="application/merge-patch+json"
        )
