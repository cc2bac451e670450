"""The only module that talks to the Kubernetes API (besides kopf's own watching).

Each method is one request, counted in ``kubehull_operator_api_writes_total``. Requests run on the synchronous
``kubernetes`` client; the controller calls them from worker threads.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import socket
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from kubehull_api.common import GROUP, VERSION
from kubehull_api.noderuntime import KIND as NODE_RUNTIME_KIND
from kubehull_api.noderuntime import PLURAL as NODE_RUNTIMES
from kubehull_api.noderuntime import HandlerConfig
from kubehull_api.runtimeprofile import PLURAL as RUNTIME_PROFILES
from kubehull_api.runtimeprofile import RuntimeProfile, RuntimeProfileStatus
from kubehull_operator.metrics import Metrics
from kubehull_operator.reconcile.model import ADMISSION_KINDS, NodeRecord

FIELD_MANAGER = "kubehull-operator"
MERGE_PATCH = "application/merge-patch+json"
WRITER = {"field_manager": FIELD_MANAGER}
PATCHER = {"field_manager": FIELD_MANAGER, "_content_type": MERGE_PATCH}
ADMISSION_GROUP, ADMISSION_VERSION = "admissionregistration.k8s.io", "v1"
EVENT_NAMESPACE = "default"  # where Kubernetes records events about cluster-scoped objects
# A list of PartialObjectMetadata: names and labels without the objects' bodies (a real Node's is kilobytes).
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
LIST_PAGE = 500  # objects per page of a list


def api_client(connections: int) -> k8s.ApiClient:
    """In a pod: its service account; elsewhere: $KUBECONFIG or ~/.kube/config. ``connections``: how many
    requests may run at once (one per writer thread, and the lease's) each keeping its TLS connection; beyond
    the pool, each request would open and close its own."""
    configuration = k8s.Configuration()
    if "KUBERNETES_SERVICE_HOST" in os.environ:
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    return k8s.ApiClient(configuration)


def _raw(body: Mapping[str, Any]) -> Any:
    """A plain-dict body: the client sends dicts as they are, so every field we set is exactly what is written."""
    return dict(body)


def _handlers(handlers: tuple[HandlerConfig, ...]) -> list[dict[str, Any]]:
    return [handler.wire() for handler in handlers]


class Kube:
    def __init__(self, client: k8s.ApiClient, metrics: Metrics, identity: str | None = None) -> None:
        self.client = client
        self.metrics = metrics
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.core = k8s.CoreV1Api(client)
        self.node_api = k8s.NodeV1Api(client)
        self.custom = k8s.CustomObjectsApi(client)
        self.coordination = k8s.CoordinationV1Api(client)
        self.apps = k8s.AppsV1Api(client)

    @staticmethod
    def _answer(call: Callable[..., Any], *args: Any, **options: Any) -> dict[str, Any]:
        """``call(*args, **options)``'s answer as the API server's JSON, not the client's models: the controller
        reads a few fields of it (a real Node's answer is kilobytes), and every caller gets the same plain dicts."""
        answer: dict[str, Any] = json.loads(call(*args, **options, _preload_content=False).data)
        return answer

    def _write(self, resource: str, verb: str, call: Callable[..., Any], *args: Any, **options: Any) -> dict[str, Any]:
        """One write, counted in the metrics by its result."""
        try:
            answer = self._answer(call, *args, **options)
        except ApiException as error:
            self.metrics.api_writes.labels(resource, verb, str(error.status)).inc()
            raise
        self.metrics.api_writes.labels(resource, verb, "ok").inc()
        return answer

    # --- NodeRuntimes ------------------------------------------------------------------------------------------

    def create_node_runtime(self, node: NodeRecord, handlers: tuple[HandlerConfig, ...]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": NODE_RUNTIME_KIND,
            "metadata": {
                "name": node.name,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid}],
            },
            "spec": {"handlers": _handlers(handlers)},
        }
        create = self.custom.create_cluster_custom_object
        return self._write(NODE_RUNTIMES, "create", create, GROUP, VERSION, NODE_RUNTIMES, body, **WRITER)

    def set_node_runtime_handlers(self, name: str, handlers: tuple[HandlerConfig, ...]) -> dict[str, Any]:
        patch = {"spec": {"handlers": _handlers(handlers)}}
        update = self.custom.patch_cluster_custom_object
        return self._write(NODE_RUNTIMES, "patch", update, GROUP, VERSION, NODE_RUNTIMES, name, patch, **PATCHER)

    def delete_node_runtime(self, name: str) -> None:
        delete = self.custom.delete_cluster_custom_object
        self._write(NODE_RUNTIMES, "delete", delete, GROUP, VERSION, NODE_RUNTIMES, name)

    # --- Nodes, RuntimeClasses ---------------------------------------------------------------------------------

    def set_node_labels(self, name: str, labels: Mapping[str, str | None]) -> dict[str, Any]:
        patch = {"metadata": {"labels": dict(labels)}}
        return self._write("nodes", "patch", self.core.patch_node, name, patch, **PATCHER)

    def apply_runtime_class(self, body: Mapping[str, Any], resource_version: str | None) -> dict[str, Any]:
        if resource_version is None:
            return self._write("runtimeclasses", "create", self.node_api.create_runtime_class, _raw(body), **WRITER)
        replacement = {**body, "metadata": {**body["metadata"], "resourceVersion": resource_version}}
        replace = self.node_api.replace_runtime_class
        return self._write("runtimeclasses", "replace", replace, body["metadata"]["name"], replacement, **WRITER)

    def delete_runtime_class(self, name: str) -> None:
        self._write("runtimeclasses", "delete", self.node_api.delete_runtime_class, name)

    # --- admission policies (namespace defaults) ------------------------------------------------------------

    def apply_admission(self, body: Mapping[str, Any], resource_version: str | None) -> dict[str, Any]:
        """Create an admission object (admissionregistration.k8s.io/v1), or replace exactly the version read."""
        plural = ADMISSION_KINDS[body["kind"]]
        where = (ADMISSION_GROUP, ADMISSION_VERSION, plural)
        if resource_version is None:
            return self._write(plural, "create", self.custom.create_cluster_custom_object, *where, _raw(body), **WRITER)
        replacement = {**body, "metadata": {**body["metadata"], "resourceVersion": resource_version}}
        replace = self.custom.replace_cluster_custom_object
        return self._write(plural, "replace", replace, *where, body["metadata"]["name"], replacement, **WRITER)

    def delete_admission(self, kind: str, name: str) -> None:
        plural = ADMISSION_KINDS[kind]
        delete = self.custom.delete_cluster_custom_object
        self._write(plural, "delete", delete, ADMISSION_GROUP, ADMISSION_VERSION, plural, name)

    # --- RuntimeProfiles ---------------------------------------------------------------------------------------

    def set_profile_status(self, name: str, status: RuntimeProfileStatus) -> dict[str, Any]:
        patch = {"status": status.model_dump(by_alias=True, exclude_none=True, mode="json")}
        update = self.custom.patch_cluster_custom_object_status
        return self._write(
            RUNTIME_PROFILES, "patch-status", update, GROUP, VERSION, RUNTIME_PROFILES, name, patch, **PATCHER
        )

    def record_event(self, profile: RuntimeProfile, kind: str, reason: str, message: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{profile.name}.", "namespace": EVENT_NAMESPACE},
            "involvedObject": {
                "apiVersion": profile.api_version,
                "kind": profile.kind,
                "name": profile.name,
                "uid": profile.uid,
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self.identity,
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        self._write("events", "create", self.core.create_namespaced_event, EVENT_NAMESPACE, _raw(body))

    # --- reads --------------------------------------------------------------------------------------------------

    def node_runtimes(self) -> list[dict[str, Any]]:
        return self._items(self._lister(NODE_RUNTIMES))

    def node_labels(self) -> dict[str, dict[str, str]]:
        return {meta["name"]: meta.get("labels") or {} for meta in self._metadata(self.core.list_node)}

    def pod_names(self, namespace: str, selector: str) -> set[str]:
        return self._names(lambda **page: self.core.list_namespaced_pod(namespace, label_selector=selector, **page))

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        patch = {"spec": {"replicas": replicas}}
        self._write(
            "deployments", "patch", self.apps.patch_namespaced_deployment_scale, name, namespace, patch, **PATCHER
        )

    # --- list and watch (the controller's mirrors) --------------------------------------------------------------

    def list_pages(self, plural: str) -> Iterator[dict[str, Any]]:
        """The pages of a list of every ``plural`` ("nodes" or "noderuntimes"), each given up after 60 s of
        silence. The last page's ``metadata.resourceVersion`` is the version the list was read at."""
        return self._pages(self._lister(plural), _request_timeout=(10, 60))

    def watch(self, plural: str, resource_version: str, timeout: int) -> Generator[dict[str, Any]]:
        """The events of a watch of every ``plural`` after ``resource_version``, bookmarks included, as the API
        server's JSON; the API server ends it after ``timeout`` seconds (a silent connection is given up 30 s
        later). Close the iterator to end it sooner."""
        response = self._lister(plural)(
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(10, timeout + 30),
        )
        try:
            for line in iter_resp_lines(response):
                yield json.loads(line)
        finally:
            response.close()
            response.release_conn()

    def _lister(self, plural: str) -> Callable[..., Any]:
        if plural == "nodes":
            return self.core.list_node
        if plural == NODE_RUNTIMES:
            return functools.partial(self.custom.list_cluster_custom_object, GROUP, VERSION, NODE_RUNTIMES)
        raise ValueError(f"no list of {plural!r}")

    @classmethod
    def _pages(cls, list_page: Callable[..., Any], **options: Any) -> Iterator[dict[str, Any]]:
        """A list's pages, as plain dicts, each asked for with ``options``."""
        token = None
        while True:
            page = cls._answer(list_page, limit=LIST_PAGE, _continue=token, **options)
            yield page
            token = page.get("metadata", {}).get("continue") or None
            if token is None:
                return

    @classmethod
    def _items(cls, list_page: Callable[..., Any]) -> list[dict[str, Any]]:
        """Every object of a list, a page at a time, as plain dicts."""
        return [item for page in cls._pages(list_page) for item in page.get("items") or []]

    @classmethod
    def _metadata(cls, list_page: Callable[..., Any]) -> list[dict[str, Any]]:
        """The metadata of every object of a kind (names, labels), without the objects' bodies."""
        items = cls._items(lambda **page: list_page(_headers={"Accept": METADATA_ONLY}, **page))
        return [item["metadata"] for item in items]

    @classmethod
    def _names(cls, list_page: Callable[..., Any]) -> set[str]:
        """The names of every object of a list."""
        return {meta["name"] for meta in cls._metadata(list_page)}

    # --- Leases (leader election) ------------------------------------------------------------------------------

    def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._answer(self.coordination.read_namespaced_lease, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def write_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create the lease (no resourceVersion in ``body``) or replace exactly the version read."""
        if not body["metadata"].get("resourceVersion"):
            return self._write(
                "leases", "create", self.coordination.create_namespaced_lease, namespace, _raw(body), **WRITER
            )
        replace = self.coordination.replace_namespaced_lease
        return self._write("leases", "replace", replace, body["metadata"]["name"], namespace, _raw(body), **WRITER)
