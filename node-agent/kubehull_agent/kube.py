"""The agent's only conversation with the API server: its own node's NodeHandlers, listed and watched, their
statuses written and their finalizers released; and its own Node read, for the runtime its kubelet reports.
Nothing else in the cluster is written (the chart's RBAC and admission policy enforce it)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from kubehull_api.common import GROUP, VERSION
from kubehull_api.nodehandler import FINALIZER, NODE_NAME_FIELD, PLURAL

MERGE_PATCH = "application/merge-patch+json"
RELEASE_ATTEMPTS = 5


class ExpiredError(Exception):
    """410 Gone: the resourceVersion is older than the API server's watch cache; only a new list helps."""


def api_client() -> k8s.ApiClient:
    if "KUBERNETES_SERVICE_HOST" in os.environ:
        k8s_config.load_incluster_config()
        return k8s.ApiClient()
    client: k8s.ApiClient = k8s_config.new_client_from_config()
    return client


class NodeHandlers:
    """The NodeHandlers of one node (selected by ``spec.nodeName``), as the API server's JSON."""

    def __init__(self, client: k8s.ApiClient, node: str) -> None:
        self.custom: Any = k8s.CustomObjectsApi(client)
        self.core: Any = k8s.CoreV1Api(client)
        self.node = node
        self.selector = f"{NODE_NAME_FIELD}={node}"

    def kubelet_runtime(self) -> str:
        """The container runtime the node's kubelet reports using (``status.nodeInfo.containerRuntimeVersion``,
        ``<name>://<version>``); "" if it has reported none."""
        # Raw JSON: the client's model refuses a nodeInfo without every field, and one field is all that is read.
        answer = self.core.read_node(self.node, _preload_content=False)
        node = json.loads(answer.data)
        return str(node.get("status", {}).get("nodeInfo", {}).get("containerRuntimeVersion", ""))

    def list(self) -> tuple[list[dict[str, Any]], str]:
        """The node's NodeHandlers and the resourceVersion they were read at. One node has a handful: no paging."""
        answer = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, field_selector=self.selector)
        return list(answer.get("items") or []), str(answer["metadata"]["resourceVersion"])

    def watch(self, resource_version: str, timeout: int) -> Iterator[dict[str, Any]]:
        """The events after ``resource_version`` (bookmarks included, so that a quiet node's version stays
        recent) until the API server ends the watch after ``timeout`` seconds; ExpiredError on 410 Gone."""
        try:
            response = self.custom.list_cluster_custom_object(
                GROUP,
                VERSION,
                PLURAL,
                field_selector=self.selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout,
                _preload_content=False,
                _request_timeout=(10, timeout + 30),  # a connection silent that long is broken
            )
        except ApiException as error:
            if error.status == 410:
                raise ExpiredError(error.reason) from error
            raise
        with contextlib.closing(response):
            for line in iter_resp_lines(response):
                event: dict[str, Any] = json.loads(line)
                if event.get("type") == "ERROR":
                    body = event.get("object") or {}
                    if body.get("code") == 410:
                        raise ExpiredError(body.get("message", "410 Gone"))
                    raise ApiException(status=body.get("code"), reason=body.get("message"))
                yield event

    def write_status(self, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, PLURAL, name, {"status": status}, _content_type=MERGE_PATCH
        )

    def release(self, name: str, resource_version: str, finalizers: Sequence[str]) -> None:
        """Take the agent's finalizer off ``name`` (its ``finalizers`` at ``resource_version``), keeping the
        others. The patch carries the version, so a concurrent change is never overwritten: on a conflict the
        object is read again and the patch made anew. Gone already is released."""
        for _ in range(RELEASE_ATTEMPTS):
            if FINALIZER not in finalizers:
                return
            patch = {
                "metadata": {
                    "resourceVersion": resource_version,
                    "finalizers": [finalizer for finalizer in finalizers if finalizer != FINALIZER],
                }
            }
            try:
                self.custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, name, patch, _content_type=MERGE_PATCH)
                return
            except ApiException as error:
                if error.status == 404:
                    return
                if error.status != 409:
                    raise
            try:
                metadata = self.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)["metadata"]
            except ApiException as error:
                if error.status == 404:
                    return
                raise
            resource_version, finalizers = metadata["resourceVersion"], metadata.get("finalizers") or []
        raise RuntimeError(f"cannot release {name}: it changed {RELEASE_ATTEMPTS} times while the agent tried")
