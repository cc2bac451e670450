"""Races between exits, starts, stops and removes on many containers: no status update is lost or applied out of
order, and a removed container never comes back (from memory or, after a restart, from its record on disk).

hulld updates a record's status by applying a change to the record as it is at that moment, under the table's
lock (``Table.update``); before that, a caller wrote back its own older copy, so an exit recorded by the event
watcher could be overwritten by StartContainer's RUNNING, and a status read racing RemoveContainer could write
the removed record back.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from kubehull_harness.pytest_plugin import OCIRegistry
from kubehull_harness.waiting import wait_until
from tests.hulld.conftest import Hulld

pytestmark = [pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

CONTAINERS = 12
"""Of each kind: containers that exit at once (racing their own start) and ones that run until removed."""
EVENT_NAMES = {
    cri.CONTAINER_CREATED_EVENT: "CREATED",
    cri.CONTAINER_STARTED_EVENT: "STARTED",
    cri.CONTAINER_STOPPED_EVENT: "STOPPED",
    cri.CONTAINER_DELETED_EVENT: "DELETED",
}


def collect_events(runtime: Any, into: dict[str, list[str]]) -> Callable[[], None]:
    """Record every container event in order, per container; returns what stops the collection."""
    stream = runtime.GetContainerEvents(cri.GetEventsRequest())

    def consume() -> None:
        try:
            for event in stream:
                into[event.container_id].append(EVENT_NAMES[event.container_event_type])
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    cancel: Callable[[], None] = stream.cancel
    return cancel


@contextlib.contextmanager
def hammering(work: Callable[[], object]) -> Iterator[None]:
    """Run ``work`` over and over in three threads while the block runs (what the kubelet's relists do); any
    error but NOT_FOUND (a container removed meanwhile) fails the test."""
    done = threading.Event()
    failures: list[grpc.RpcError] = []

    def loop() -> None:
        while not done.is_set():
            try:
                work()
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    failures.append(error)

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert failures == []


@pytest.mark.parametrize("handler", ["runc", "shim-runc"])
def test_racing_exits_starts_stops_and_removes_lose_nothing(
    hulld: Hulld, oci_registry: OCIRegistry, tmp_path: Path, handler: str
) -> None:
    """Exits come from conmon's files (runc) or the shim's Wait answers (shim-runc), both racing the rest."""
    image = oci_registry.images["busybox"].reference
    hulld.images().PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=image)))
    runtime = hulld.runtime()
    pod_config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="racing", namespace="t", uid="racing"),
        log_directory=str(hulld.pod_log_root / "racing"),
        linux=cri.LinuxPodSandboxConfig(
            security_context=cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption(network=cri.NODE))
        ),
    )
    pod = runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=pod_config, runtime_handler=handler)).pod_sandbox_id
    events: dict[str, list[str]] = defaultdict(list)
    stop_events = collect_events(runtime, events)

    def create(name: str, command: list[str]) -> str:
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=image), command=command
        )
        request = cri.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=pod_config)
        return str(runtime.CreateContainer(request).container_id)

    quick = [create(f"quick-{index}", ["sh", "-c", "exit 3"]) for index in range(CONTAINERS)]
    lasting = [create(f"lasting-{index}", ["sleep", "3600"]) for index in range(CONTAINERS)]

    def read_all_statuses() -> None:
        for container in quick + lasting:
            runtime.ContainerStatus(cri.ContainerStatusRequest(container_id=container))
        runtime.ListContainers(cri.ListContainersRequest())

    with concurrent.futures.ThreadPoolExecutor(8) as pool, hammering(read_all_statuses):
        list(pool.map(lambda c: runtime.StartContainer(cri.StartContainerRequest(container_id=c)), quick + lasting))

        def exited(container: str) -> bool:
            status = runtime.ContainerStatus(cri.ContainerStatusRequest(container_id=container)).status
            return bool(status.state == cri.CONTAINER_EXITED)

        wait_until(lambda: all(exited(container) for container in quick), timeout=60, what="the quick exits")
        list(pool.map(lambda c: runtime.StopContainer(cri.StopContainerRequest(container_id=c, timeout=0)), lasting))
        list(pool.map(lambda c: runtime.RemoveContainer(cri.RemoveContainerRequest(container_id=c)), lasting))

    for container in quick:
        status = runtime.ContainerStatus(cri.ContainerStatusRequest(container_id=container)).status
        assert (status.exit_code, status.reason) == (3, "Error")
        assert 0 < status.started_at <= status.finished_at
    listed = {container.id for container in runtime.ListContainers(cri.ListContainersRequest()).containers}
    assert listed == set(quick)
    records = hulld.root / "records" / "containers"
    assert {path.stem for path in records.glob("*.json")} == set(quick)

    wait_until(lambda: all(len(events[c]) >= 4 for c in lasting), what="every container's events")
    stop_events()
    for container in quick:
        assert events[container] == ["CREATED", "STARTED", "STOPPED"], container
    for container in lasting:
        assert events[container] == ["CREATED", "STARTED", "STOPPED", "DELETED"], container

    hulld.stop()  # a removed record written back to disk would be loaded again now
    hulld.start()
    listed = {container.id for container in hulld.runtime().ListContainers(cri.ListContainersRequest()).containers}
    assert listed == set(quick)
    hulld.runtime().RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
