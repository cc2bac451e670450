"""The controller's list-then-watch of Nodes and NodeRuntimes (``reflector``), against real API servers.

A second kube-apiserver on the session's etcd serves the reflector, as one API server of a highly available
control plane does; the test restarts it to break the reflector's watch and changes the cluster through the
session's API server meanwhile. The restarted API server answers the resumed watch 410 Gone (its watch cache
starts anew), so the reflector lists again, and what was deleted in between must go from the mirror: no watch
event will ever tell of it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from kubehull_harness import apiserver
from kubehull_harness.apiserver import KubeAPIServer
from kubehull_harness.operators import OperatorProcess
from kubehull_harness.waiting import wait_until
from kubehull_operator.kube import Kube
from kubehull_operator.metrics import Metrics
from kubehull_operator.mirror import Mirror
from kubehull_operator.reconcile.model import NodeRecord, node_record
from kubehull_operator.reflector import Reflector
from tests.operator.conftest import GROUP, VERSION, Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.beside]


@pytest.fixture
def second_apiserver(kubehull_crds: KubeAPIServer, tmp_path: Path, component_logs: Path) -> Iterator[KubeAPIServer]:
    server = apiserver.start(tmp_path, component_logs, kubehull_crds.etcd_url, name="kube-apiserver-second")
    yield server
    server.stop()


class Followed:
    """A reflector of Nodes running against ``server``, its mirror read on its event loop."""

    def __init__(self, server: KubeAPIServer, cluster: Cluster) -> None:
        self.cluster = cluster
        self.mirror: Mirror[NodeRecord] = Mirror()
        self.loop = asyncio.new_event_loop()
        self.stopping = threading.Event()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        kube = Kube(server.api_client(), Metrics())

        def parse(body: Mapping[str, Any]) -> NodeRecord:
            if body["metadata"].get("labels", {}).get("unparsable"):
                raise ValueError("labelled unparsable")
            return node_record(body)

        self.reflector = Reflector(kube, "nodes", parse, self.mirror, self.loop, lambda: None)
        threading.Thread(target=self.reflector.run, args=(self.stopping,), daemon=True).start()

    def nodes(self) -> dict[str, Mapping[str, str]]:
        """This test's nodes in the mirror, with their labels."""

        async def read() -> dict[str, Mapping[str, str]]:
            return {name: record.labels for name, (record,) in self.mirror.items()}

        found = asyncio.run_coroutine_threadsafe(read(), self.loop).result(timeout=5)
        return {name: labels for name, labels in found.items() if name.startswith(self.cluster.prefix)}

    def close(self) -> None:
        self.stopping.set()
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def followed(second_apiserver: KubeAPIServer, kubehull_crds: KubeAPIServer) -> Iterator[Followed]:
    cluster = Cluster(kubehull_crds)
    following = Followed(second_apiserver, cluster)
    yield following
    following.close()
    cluster.cleanup()


def test_lists_then_follows_the_watch(followed: Followed) -> None:
    cluster = followed.cluster
    a, b = cluster.create_node("a"), cluster.create_node("b")
    wait_until(lambda: followed.nodes().keys() == {a, b}, what="the listed nodes")
    c = cluster.create_node("c")
    cluster.label_node(a, pool="untrusted")
    cluster.core.delete_node(b)
    wait_until(lambda: followed.nodes().keys() == {a, c}, what="the watch's creation and deletion")
    assert followed.nodes()[a]["pool"] == "untrusted"
    # each event moves the version a broken watch resumes from (not the one its watch started at)
    labelled = cluster.core.read_node(a).metadata.resource_version
    assert followed.reflector.version is not None
    assert int(followed.reflector.version) >= int(labelled)
    cluster.label_node(c, unparsable="yes")  # a record that does not parse is left out, the others kept
    wait_until(lambda: followed.nodes().keys() == {a}, what="the unparsable node left out")


def test_a_list_after_410_drops_what_was_deleted_while_the_watch_was_cut(
    followed: Followed, second_apiserver: KubeAPIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kubehull_operator.reflector")
    cluster = followed.cluster
    a, b = cluster.create_node("a"), cluster.create_node("b")
    wait_until(lambda: followed.nodes().keys() == {a, b}, what="the listed nodes")
    second_apiserver.stop()
    cluster.core.delete_node(b)  # through the other API server: the reflector's is down
    cluster.label_node(a, pool="untrusted")
    c = cluster.create_node("c")
    second_apiserver.restart()
    wait_until(lambda: followed.nodes().keys() == {a, c}, timeout=60, what="the relisted nodes")
    assert followed.nodes()[a]["pool"] == "untrusted"
    # by a new list, after the 410 (a watch resumed from before the deletion would have replayed it)
    assert "nodes: too old resource version" in caplog.text, caplog.text
    assert caplog.text.count("nodes: listed") == 2, caplog.text


def test_the_operator_acts_on_what_changed_while_its_watch_was_cut(
    second_apiserver: KubeAPIServer, kubehull_crds: KubeAPIServer, component_logs: Path
) -> None:
    """A node deleted meanwhile loses its NodeRuntime and leaves the profile's counts; a NodeRuntime deleted
    meanwhile (its node still there) is created again."""
    # Without a lease: a leader that cannot renew it steps down, as it should (not what this test is about).
    operator = OperatorProcess(second_apiserver.kubeconfig, component_logs, "--no-leader-election")
    cluster = Cluster(kubehull_crds)
    try:
        kept, deleted = cluster.create_node("kept"), cluster.create_node("deleted")
        profile = cluster.create_profile("p", {"handler": "runc", "runtime": {"engine": "runc"}})
        wait_until(lambda: cluster.exists(lambda: cluster.node_runtime(kept)), what="a NodeRuntime")
        wait_until(lambda: cluster.exists(lambda: cluster.node_runtime(deleted)), what="the other NodeRuntime")
        wait_until(lambda: cluster.profile(profile)["status"]["nodes"]["desired"] == 2, what="2 nodes desired")
        created = cluster.node_runtime(kept)["metadata"]["uid"]
        second_apiserver.stop()
        # No garbage collector runs here: the deleted node's NodeRuntime stays until the operator deletes it.
        cluster.core.delete_node(deleted)
        cluster.custom.delete_cluster_custom_object(GROUP, VERSION, "noderuntimes", kept)
        second_apiserver.restart()
        wait_until(
            lambda: cluster.profile(profile)["status"]["nodes"]["desired"] == 1, timeout=60, what="1 node desired"
        )
        wait_until(lambda: not cluster.exists(lambda: cluster.node_runtime(deleted)), what="its NodeRuntime gone")
        recreated = wait_until(lambda: cluster.node_runtime(kept), what="the NodeRuntime created again")
        assert recreated["metadata"]["uid"] != created
        assert "nodes: too old resource version" in operator.log
        assert "noderuntimes: too old resource version" in operator.log
    finally:
        cluster.cleanup()
        operator.stop()
