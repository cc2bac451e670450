"""Hostile CRI requests never reach the host (issue #11).

Each attack plants canaries (tests/hulld/security/canary.py) outside everything hulld owns, sends its request
through a real hulld, checks the answer the contract gives (INVALID_ARGUMENT naming the CRI field, NOT_FOUND
across the kubelet/private boundary, a runtime spec holding nothing the handler does not allow), then checks
that the canaries did not change and that hulld still answers on both its sockets.

One hulld with a pod network serves the module (one per test would cost more than most tests): besides runc
it has "filtered" and "broad", which let some annotations through to the runtime (never hulld's own
io.kubernetes.cri.*), and "nodevices", which keeps the host's devices out of privileged containers. Tests make
their own pods and compare listings before and after, so they do not depend on each other; Status, which needs
a reconfigured hulld, gets one of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri
from google.protobuf import json_format

from kubehull_harness.pytest_plugin import OCIRegistry
from kubehull_harness.waiting import wait_until
from tests.hulld.conftest import Hulld
from tests.hulld.security.canary import Canaries

pytestmark = [pytest.mark.registry, pytest.mark.root]

RUNC = "/usr/sbin/runc"
EXTRA_HANDLERS = f"""
[handlers.filtered]
runtime_path = "{RUNC}"
allowed_annotations = ["allowed.example.com/exact", "prefix.example.com/*"]

[handlers.broad]
runtime_path = "{RUNC}"
allowed_annotations = ["io.kubernetes.*"]

[handlers.nodevices]
runtime_path = "{RUNC}"
privileged_without_host_devices = true
"""
SLEEP = ["sleep", "3600"]
PRIVATE_LABEL = "hulld.kubehull.io/private"
UNKNOWN_IDS = ("0" * 64, "no-such-id")
# Device nodes of this host a privileged container gets from runc, and must not get from "nodevices".
HOST_DEVICE_CANDIDATES = (Path("/dev/kmsg"), Path("/dev/loop-control"), Path("/dev/fuse"))


@dataclasses.dataclass(frozen=True)
class Pod:
    id: str
    config: cri.PodSandboxConfig
    """What it was made with: CreateContainer sends it again, as the kubelet does."""


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_hulld(
    tmp_path_factory: pytest.TempPathFactory, component_logs: Path, oci_registry: OCIRegistry
) -> Iterator[Hulld]:
    running = Hulld(
        tmp_path_factory.mktemp("hulld"), component_logs, oci_registry.host, network=True, extra_config=EXTRA_HANDLERS
    )
    yield running
    for runtime in (running.runtime(), running.private_runtime()):
        with contextlib.suppress(grpc.RpcError):
            for pod in runtime.ListPodSandbox(cri.ListPodSandboxRequest()).items:
                runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    running.tear_down()


@pytest.fixture(scope="module")
def image(shared_hulld: Hulld, oci_registry: OCIRegistry) -> str:
    reference = oci_registry.images["busybox"].reference
    shared_hulld.images().PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=reference)))
    return reference


@pytest.fixture(scope="module")
def target_pod(shared_hulld: Hulld) -> Pod:
    """A ready pod that hostile CreateContainer requests aim at."""
    return run_pod(shared_hulld.runtime(), pod_config(shared_hulld, "target"))


# --- requests -------------------------------------------------------------------------------------------------


def pod_config(hulld: Hulld, name: str, fields: Mapping[str, Any] | None = None) -> cri.PodSandboxConfig:
    """A PodSandboxConfig as the kubelet writes it (log directory <pod_log_root>/<namespace>_<name>_<uid>), with
    ``fields`` (protobuf's JSON mapping) merged in."""
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace="security", uid=f"uid-{name}"),
        hostname=name,
        log_directory=str(hulld.pod_log_root / f"security_{name}_uid-{name}"),
    )
    return json_format.ParseDict(dict(fields or {}), config)


def container_config(
    name: str, image: str, command: list[str], fields: Mapping[str, Any] | None = None
) -> cri.ContainerConfig:
    """A ContainerConfig logging to <name>/0.log as the kubelet names it, with ``fields`` merged in."""
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name),
        image=cri.ImageSpec(image=image),
        command=command,
        log_path=f"{name}/0.log",
    )
    return json_format.ParseDict(dict(fields or {}), config)


def name_of(tmp_path: Path) -> str:
    """A pod or container name of the test's own (its tmp_path's name is unique in the session): one test's
    request that was wrongly accepted does not make the next one fail for its name."""
    return tmp_path.name.replace("_", "-").lower()


def run_pod(runtime: Any, config: cri.PodSandboxConfig, handler: str = "") -> Pod:
    answer = runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config, runtime_handler=handler))
    return Pod(id=answer.pod_sandbox_id, config=config)


def create_container(runtime: Any, pod: Pod, config: cri.ContainerConfig) -> str:
    request = cri.CreateContainerRequest(pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config)
    container_id: str = runtime.CreateContainer(request).container_id
    return container_id


def start_container(runtime: Any, pod: Pod, config: cri.ContainerConfig) -> str:
    container_id = create_container(runtime, pod, config)
    runtime.StartContainer(cri.StartContainerRequest(container_id=container_id))
    return container_id


def run_to_exit_if_accepted(runtime: Any, pod: Pod, config: cri.ContainerConfig) -> Any:
    """Create and start the container and wait for its exit: OK, or the status code it was refused with."""
    try:
        container_id = start_container(runtime, pod, config)
    except grpc.RpcError as error:
        return error.code()

    def exited() -> bool:
        status = runtime.ContainerStatus(cri.ContainerStatusRequest(container_id=container_id)).status
        return bool(status.state == cri.CONTAINER_EXITED)

    wait_until(exited, what=f"{config.metadata.name}'s exit")
    return grpc.StatusCode.OK


def exec_output(runtime: Any, container_id: str, *command: str) -> str:
    result = runtime.ExecSync(cri.ExecSyncRequest(container_id=container_id, cmd=list(command), timeout=10))
    assert result.exit_code == 0, result.stderr.decode(errors="replace")
    output: str = result.stdout.decode()
    return output


def bundle_spec(hulld: Hulld, container_id: str) -> dict[str, Any]:
    """The OCI spec hulld gave the runtime for the container."""
    spec: dict[str, Any] = json.loads((hulld.root / "containers" / container_id / "bundle" / "config.json").read_text())
    return spec


def stop_and_remove(runtime: Any, pod_id: str, container_id: str) -> None:
    runtime.StopContainer(cri.StopContainerRequest(container_id=container_id, timeout=0))
    runtime.RemoveContainer(cri.RemoveContainerRequest(container_id=container_id))
    runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def pod_ids(runtime: Any) -> set[str]:
    return {pod.id for pod in runtime.ListPodSandbox(cri.ListPodSandboxRequest()).items}


def container_ids(runtime: Any) -> set[str]:
    return {container.id for container in runtime.ListContainers(cri.ListContainersRequest()).containers}


def listed_ids(runtime: Any, pod_id: str = "") -> set[str]:
    """Every pod and container ID the socket shows in its four listings, all of them or those of one pod."""
    pods = runtime.ListPodSandbox(cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(id=pod_id))).items
    containers = runtime.ListContainers(
        cri.ListContainersRequest(filter=cri.ContainerFilter(pod_sandbox_id=pod_id))
    ).containers
    container_stats = runtime.ListContainerStats(
        cri.ListContainerStatsRequest(filter=cri.ContainerStatsFilter(pod_sandbox_id=pod_id))
    ).stats
    pod_stats = runtime.ListPodSandboxStats(
        cri.ListPodSandboxStatsRequest(filter=cri.PodSandboxStatsFilter(id=pod_id))
    ).stats
    return (
        {pod.id for pod in pods}
        | {container.id for container in containers}
        | {stats.attributes.id for stats in container_stats}
        | {stats.attributes.id for stats in pod_stats}
        | {stats.attributes.id for pod in pod_stats for stats in pod.linux.containers}
    )


# --- checks ---------------------------------------------------------------------------------------------------


def refusal(case: str, call: Callable[[], object]) -> Any:
    """The gRPC error that ``call`` must fail with."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{case}: accepted")


def assert_invalid_argument(case: str, call: Callable[[], object], field: str, listing: Callable[[], set[str]]) -> None:
    """``call`` fails with INVALID_ARGUMENT naming ``field`` and leaves nothing behind in ``listing``."""
    before = listing()
    error = refusal(case, call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{case}: {error.code()}: {error.details()}"
    assert field in error.details(), f"{case}: {error.details()}"
    assert listing() == before, f"{case}: left behind"


def assert_pod_refused(case: str, runtime: Any, config: cri.PodSandboxConfig, field: str) -> None:
    def run() -> object:
        return runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config))

    assert_invalid_argument(case, run, field, lambda: pod_ids(runtime))


def assert_container_refused(case: str, runtime: Any, pod: Pod, config: cri.ContainerConfig, field: str) -> None:
    assert_invalid_argument(case, lambda: create_container(runtime, pod, config), field, lambda: container_ids(runtime))


def assert_answering(hulld: Hulld) -> None:
    for runtime in (hulld.runtime(), hulld.private_runtime()):
        assert runtime.Version(cri.VersionRequest()).runtime_name == "hulld"


@contextlib.contextmanager
def attack(hulld: Hulld, tmp_path: Path) -> Iterator[Canaries]:
    """Canaries planted (outside hulld's root and pod log root) and snapshotted before the attack in the block;
    after it, they are unchanged and hulld still answers."""
    canaries = Canaries.plant(tmp_path / "host")
    before = canaries.snapshots()
    yield canaries
    canaries.assert_unchanged(before)
    assert_answering(hulld)


@contextlib.contextmanager
def container_events(runtime: Any) -> Iterator[list[tuple[str, int]]]:
    """(container ID, event type) of every container event the socket sends while the block runs."""
    stream = runtime.GetContainerEvents(cri.GetEventsRequest())
    seen: list[tuple[str, int]] = []

    def listen() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled when the block ends
            for event in stream:
                seen.append((event.container_id, event.container_event_type))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        yield seen
    finally:
        stream.cancel()
        listener.join(5)


# --- 1. log paths ---------------------------------------------------------------------------------------------


def assert_logs_to(runtime: Any, pod: Pod, image: str, log_path: str) -> None:
    """A container with ``log_path`` runs and its output lands in <log_directory>/<log_path>."""
    name = log_path.split("/")[0].removesuffix(".log")
    config = container_config(name, image, ["echo", f"hello from {name}"], {"log_path": log_path})
    container = start_container(runtime, pod, config)
    log_file = Path(pod.config.log_directory) / log_path
    assert runtime.ContainerStatus(cri.ContainerStatusRequest(container_id=container)).status.log_path == str(log_file)
    wait_until(lambda: f"stdout F hello from {name}" in log_file.read_text(), what=f"{name}'s log")


def test_log_directory_outside_the_pod_log_root_is_refused(shared_hulld: Hulld, tmp_path: Path) -> None:
    runtime = shared_hulld.runtime()
    root = shared_hulld.pod_log_root
    root.mkdir(parents=True, exist_ok=True)
    with attack(shared_hulld, tmp_path) as canaries:
        linked = root / f"security_linked_{tmp_path.name}"
        linked.symlink_to(canaries.directory)
        escapes = {
            "the host's directory": str(canaries.directory),
            "a relative path": "security_relative_uid",
            "'..' out of the root": f"{root}/{os.path.relpath(canaries.directory, root)}",
            "'..' that comes back into the root": f"{root}/elsewhere/../security_back_uid",
            "a symlink under the root to the host": str(linked),
            "a directory below such a symlink": str(linked / "security_below_uid"),
        }
        for number, (case, log_directory) in enumerate(escapes.items()):
            config = pod_config(shared_hulld, f"log-directory-{number}", {"log_directory": log_directory})
            assert_pod_refused(case, runtime, config, "log_directory")


def test_log_path_outside_the_pod_log_directory_is_refused(shared_hulld: Hulld, image: str, tmp_path: Path) -> None:
    runtime = shared_hulld.runtime()
    with attack(shared_hulld, tmp_path) as canaries:
        pod = run_pod(runtime, pod_config(shared_hulld, "log-paths"))
        log_directory = Path(pod.config.log_directory)
        log_directory.mkdir(parents=True, exist_ok=True)  # the kubelet makes it before RunPodSandbox
        (log_directory / "linked").symlink_to(canaries.directory)
        escapes = {
            "absolute, the host's file": str(canaries.file),
            "'..' up and out": "../../..",
            "'..' to the host's file": os.path.relpath(canaries.file, log_directory),
            "through a symlink in the log directory": "linked/0.log",
        }
        for number, (case, log_path) in enumerate(escapes.items()):
            config = container_config(f"escape-{number}", image, ["echo", "escaped"], {"log_path": log_path})
            assert_container_refused(case, runtime, pod, config, "log_path")

        # A log file that already is a symlink to a host file: refused, or written without following the link.
        (log_directory / "planted.log").symlink_to(canaries.file)
        planted = container_config("planted", image, ["echo", "escaped"], {"log_path": "planted.log"})
        assert run_to_exit_if_accepted(runtime, pod, planted) != grpc.StatusCode.INTERNAL

        # What the kubelet (<container>/<attempt>.log) and critest (<container>.log) ask for still works.
        for log_path in ("nested/0.log", "flat.log"):
            assert_logs_to(runtime, pod, image, log_path)


# --- 2. annotations -------------------------------------------------------------------------------------------

FORGED = "forged by the request"
POD_ANNOTATIONS = {
    "allowed.example.com/exact": "from the pod",
    "prefix.example.com/pod": "from the pod",
    "allowed.example.com/exact.longer": "not allowed: only the exact name is",
    "denied.example.com/pod": "not allowed",
    "io.kubernetes.example/pod": "from the pod",
    "io.kubernetes.cri.sandbox-id": FORGED,
}
CONTAINER_ANNOTATIONS = {
    "prefix.example.com/container": "from the container",
    "prefix.example.com": "not allowed: the prefix is the pattern up to its '*'",
    "denied.example.com/container": "not allowed",
    "io.kubernetes.cri.container-type": FORGED,
}
FILTERED_THROUGH = {
    "allowed.example.com/exact": "from the pod",
    "prefix.example.com/pod": "from the pod",
    "prefix.example.com/container": "from the container",
}


@pytest.mark.parametrize(
    ("handler", "passed"),
    [("filtered", FILTERED_THROUGH), ("broad", {"io.kubernetes.example/pod": "from the pod"}), ("runc", {})],
)
def test_only_allowed_annotations_reach_the_runtime(
    shared_hulld: Hulld, image: str, tmp_path: Path, handler: str, passed: dict[str, str]
) -> None:
    runtime = shared_hulld.runtime()
    with attack(shared_hulld, tmp_path):
        pod = run_pod(
            runtime, pod_config(shared_hulld, f"annotated-{handler}", {"annotations": POD_ANNOTATIONS}), handler
        )
        container = create_container(
            runtime, pod, container_config("main", image, SLEEP, {"annotations": CONTAINER_ANNOTATIONS})
        )
        given = bundle_spec(shared_hulld, container).get("annotations", {})
        requested = {**POD_ANNOTATIONS, **CONTAINER_ANNOTATIONS}
        assert {name: value for name, value in given.items() if requested.get(name) == value} == passed
        assert FORGED not in given.values()
        # The CRI's metadata still reports them as the request gave them.
        status = runtime.ContainerStatus(cri.ContainerStatusRequest(container_id=container)).status
        assert dict(status.annotations) == CONTAINER_ANNOTATIONS
        pod_status = runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status
        assert dict(pod_status.annotations) == POD_ANNOTATIONS


# --- 3. privileged containers and host devices ----------------------------------------------------------------


def opens_every_device(rules: list[dict[str, Any]]) -> bool:
    """Whether the devices cgroup rules allow every device (a rule naming no type, major or minor)."""
    return any(
        rule.get("allow") and rule.get("type", "a") == "a" and "major" not in rule and "minor" not in rule
        for rule in rules
    )


@pytest.mark.parametrize(("handler", "gets_host_devices"), [("runc", True), ("nodevices", False)])
def test_privileged_container_gets_host_devices_unless_its_handler_says_not(
    shared_hulld: Hulld, image: str, tmp_path: Path, handler: str, gets_host_devices: bool
) -> None:
    host_device = next((device for device in HOST_DEVICE_CANDIDATES if device.exists()), None)
    if host_device is None:
        pytest.skip(f"none of {', '.join(map(str, HOST_DEVICE_CANDIDATES))} on this host")
    runtime = shared_hulld.runtime()
    privileged = {"security_context": {"privileged": True}}
    with attack(shared_hulld, tmp_path):
        pod = run_pod(runtime, pod_config(shared_hulld, f"privileged-{handler}", {"linux": privileged}), handler)
        asked = {"host_path": "/dev/null", "container_path": "/dev/asked", "permissions": "rw"}
        container = start_container(
            runtime, pod, container_config("main", image, SLEEP, {"linux": privileged, "devices": [asked]})
        )
        in_dev = exec_output(runtime, container, "ls", "/dev").split()
        assert (host_device.name in in_dev) is gets_host_devices
        assert "asked" in in_dev
        linux = bundle_spec(shared_hulld, container)["linux"]
        device_paths = {device["path"] for device in linux.get("devices", [])}
        assert (str(host_device) in device_paths) is gets_host_devices
        assert "/dev/asked" in device_paths
        assert opens_every_device(linux["resources"]["devices"]) is gets_host_devices


# --- 4. private pods ------------------------------------------------------------------------------------------


def sockets(hulld: Hulld, owner: str) -> tuple[Any, Any]:
    """The RuntimeService on the ``owner`` socket ("private" or "kubelet"), and on the other one."""
    private, kubelet = hulld.private_runtime(), hulld.runtime()
    return (private, kubelet) if owner == "private" else (kubelet, private)


def requests_by_id(runtime: Any, pod: Pod, container_id: str, image: str) -> dict[str, Callable[[], object]]:
    """The requests that show or use one pod or container by its ID."""
    return {
        "PodSandboxStatus": lambda: runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=pod.id)),
        "PodSandboxStats": lambda: runtime.PodSandboxStats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod.id)),
        "CreateContainer": lambda: create_container(runtime, pod, container_config("intruder", image, SLEEP)),
        "ContainerStatus": lambda: runtime.ContainerStatus(cri.ContainerStatusRequest(container_id=container_id)),
        "ContainerStats": lambda: runtime.ContainerStats(cri.ContainerStatsRequest(container_id=container_id)),
        "StartContainer": lambda: runtime.StartContainer(cri.StartContainerRequest(container_id=container_id)),
        "ExecSync": lambda: runtime.ExecSync(cri.ExecSyncRequest(container_id=container_id, cmd=["true"], timeout=5)),
        "UpdateContainerResources": lambda: runtime.UpdateContainerResources(
            cri.UpdateContainerResourcesRequest(
                container_id=container_id, linux=cri.LinuxContainerResources(cpu_shares=2)
            )
        ),
        "ReopenContainerLog": lambda: runtime.ReopenContainerLog(
            cri.ReopenContainerLogRequest(container_id=container_id)
        ),
    }


@pytest.mark.parametrize("owner", ["private", "kubelet"])
def test_a_pod_is_invisible_and_untouchable_from_the_other_socket(
    shared_hulld: Hulld, image: str, tmp_path: Path, owner: str
) -> None:
    owning, other = sockets(shared_hulld, owner)
    with attack(shared_hulld, tmp_path):
        pod = run_pod(owning, pod_config(shared_hulld, f"owned-by-{owner}"))
        container = start_container(owning, pod, container_config("main", image, SLEEP))
        assert {pod.id, container} <= listed_ids(owning)
        assert {pod.id, container}.isdisjoint(listed_ids(other))
        assert listed_ids(other, pod.id) == set()
        for length in (len(pod.id), 12):  # crictl's short IDs: prefixes that hulld resolves
            pod_prefix, container_prefix = pod.id[:length], container[:length]
            by_prefix = dataclasses.replace(pod, id=pod_prefix)
            for name, call in requests_by_id(other, by_prefix, container_prefix, image).items():
                error = refusal(name, call)
                assert error.code() == grpc.StatusCode.NOT_FOUND, f"{name}: {error.code()}: {error.details()}"
            stop_and_remove(other, pod_prefix, container_prefix)
        pod_state = owning.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status.state
        assert pod_state == cri.SANDBOX_READY
        status = owning.ContainerStatus(cri.ContainerStatusRequest(container_id=container)).status
        assert status.state == cri.CONTAINER_RUNNING
        assert exec_output(owning, container, "echo", "still here").strip() == "still here"


@pytest.mark.parametrize("owner", ["private", "kubelet"])
def test_container_events_go_only_to_the_owning_socket(shared_hulld: Hulld, image: str, owner: str) -> None:
    owning, other = sockets(shared_hulld, owner)
    with container_events(owning) as owning_events, container_events(other) as other_events:
        # A marker on the other socket: once its start arrives, that stream has delivered all that came before.
        marker_pod = run_pod(other, pod_config(shared_hulld, f"marker-not-{owner}"))
        marker = create_container(other, marker_pod, container_config("marker", image, SLEEP))
        wait_until(lambda: (marker, cri.CONTAINER_CREATED_EVENT) in other_events, what="the marker's creation")
        pod = run_pod(owning, pod_config(shared_hulld, f"eventful-{owner}"))
        container = start_container(owning, pod, container_config("main", image, SLEEP))
        wait_until(lambda: (container, cri.CONTAINER_STARTED_EVENT) in owning_events, what="the owner's event")
        other.StartContainer(cri.StartContainerRequest(container_id=marker))
        wait_until(lambda: (marker, cri.CONTAINER_STARTED_EVENT) in other_events, what="the marker's start")
    assert container not in {identifier for identifier, _ in other_events}
    assert marker not in {identifier for identifier, _ in owning_events}


def test_the_private_label_on_a_kubelet_pod_changes_nothing(shared_hulld: Hulld, image: str) -> None:
    kubelet = shared_hulld.runtime()
    labels = {"labels": {PRIVATE_LABEL: "probe"}}
    pod = run_pod(kubelet, pod_config(shared_hulld, "labelled", labels))
    container = start_container(kubelet, pod, container_config("main", image, SLEEP, labels))
    assert {pod.id, container} <= listed_ids(kubelet)
    assert {pod.id, container}.isdisjoint(listed_ids(shared_hulld.private_runtime()))


# --- 5. field validation --------------------------------------------------------------------------------------

HOST_NETWORK = {"network": "NODE"}
INVALID_POD_FIELDS = [
    pytest.param({"linux": {"sysctls": {"kernel.panic": "0"}}}, "linux.sysctls[kernel.panic]", id="kernel.panic"),
    pytest.param({"linux": {"sysctls": {"vm.swappiness": "60"}}}, "linux.sysctls[vm.swappiness]", id="vm.swappiness"),
    pytest.param(
        {"linux": {"sysctls": {"net.ipv4.ip_forward": "1"}, "security_context": {"namespace_options": HOST_NETWORK}}},
        "linux.sysctls[net.ipv4.ip_forward]",
        id="net-sysctl-on-host-network",
    ),
    pytest.param(
        {
            "linux": {
                "sysctls": {"kernel.shm_rmid_forced": "1"},
                "security_context": {"namespace_options": {"ipc": "NODE"}},
            }
        },
        "linux.sysctls[kernel.shm_rmid_forced]",
        id="ipc-sysctl-on-host-ipc",
    ),
    pytest.param(
        {"linux": {"sysctls": {"net.ipv4.ip_unprivileged_port_start": "0\nkernel.panic=1"}}},
        "linux.sysctls[net.ipv4.ip_unprivileged_port_start]",
        id="sysctl-value-with-newline",
    ),
    pytest.param(
        {"linux": {"sysctls": {"net.ipv4.ip_unprivileged_port_start": "0\x001"}}},
        "linux.sysctls[net.ipv4.ip_unprivileged_port_start]",
        id="sysctl-value-with-nul",
    ),
    *(
        pytest.param({"hostname": hostname}, "hostname", id=f"hostname-{case}")
        for case, hostname in [("option", "-n"), ("space", "a b"), ("65-chars", "a" * 65), ("command", "x;reboot")]
    ),
    *(
        pytest.param({"linux": {"cgroup_parent": parent}}, "linux.cgroup_parent", id=f"cgroup-parent-{parent}")
        for parent in ["../../etc", "/a/../b", "/a//b"]
    ),
    pytest.param({"dns_config": {"servers": ["not-an-ip"]}}, "dns_config.servers[0]", id="dns-server"),
    pytest.param({"dns_config": {"searches": ["a b"]}}, "dns_config.searches[0]", id="dns-search"),
    pytest.param(
        {"dns_config": {"options": ["ndots:5\nnameserver 6.6.6.6"]}}, "dns_config.options[0]", id="dns-option"
    ),
]
INVALID_CONTAINER_FIELDS = [
    pytest.param(
        {"devices": [{"container_path": "relative", "host_path": "/dev/null", "permissions": "rw"}]},
        "devices[0].container_path",
        id="device-relative-container-path",
    ),
    pytest.param(
        {"devices": [{"container_path": "/dev/../etc/passwd", "host_path": "/dev/null", "permissions": "rw"}]},
        "devices[0].container_path",
        id="device-container-path-with-dot-dot",
    ),
    pytest.param(
        {"devices": [{"container_path": "/dev/shadow", "host_path": "/dev/../etc/shadow", "permissions": "r"}]},
        "devices[0].host_path",
        id="device-host-path-with-dot-dot",
    ),
    pytest.param(
        {"devices": [{"container_path": "/dev/null2", "host_path": "/dev/null", "permissions": "rwx"}]},
        "devices[0].permissions",
        id="device-permissions",
    ),
    pytest.param(
        {"mounts": [{"container_path": "/data", "host_path": "/usr", "readonly": True, "propagation": 99}]},
        "mounts[0].propagation",
        id="mount-propagation-out-of-enum",
    ),
    pytest.param(
        {"mounts": [{"container_path": "relative", "host_path": "/usr", "readonly": True}]},
        "mounts[0].container_path",
        id="mount-relative-container-path",
    ),
]


@pytest.mark.parametrize(("fields", "field"), INVALID_POD_FIELDS)
def test_invalid_pod_field_is_refused_naming_it(
    shared_hulld: Hulld, tmp_path: Path, fields: dict[str, Any], field: str
) -> None:
    with attack(shared_hulld, tmp_path):
        config = pod_config(shared_hulld, name_of(tmp_path), fields)
        assert_pod_refused(field, shared_hulld.runtime(), config, field)


@pytest.mark.parametrize(("fields", "field"), INVALID_CONTAINER_FIELDS)
def test_invalid_container_field_is_refused_naming_it(
    shared_hulld: Hulld, image: str, target_pod: Pod, tmp_path: Path, fields: dict[str, Any], field: str
) -> None:
    with attack(shared_hulld, tmp_path):
        config = container_config(name_of(tmp_path), image, SLEEP, fields)
        assert_container_refused(field, shared_hulld.runtime(), target_pod, config, field)


def test_namespaced_sysctl_applies_inside_the_pod_only(shared_hulld: Hulld, image: str) -> None:
    sysctl = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    on_host = sysctl.read_text()
    runtime = shared_hulld.runtime()
    fields = {"linux": {"sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"}}}
    pod = run_pod(runtime, pod_config(shared_hulld, "tuned", fields))
    container = start_container(runtime, pod, container_config("main", image, SLEEP))
    assert exec_output(runtime, container, "cat", str(sysctl)).strip() == "0"
    assert sysctl.read_text() == on_host


# --- 6. idempotency -------------------------------------------------------------------------------------------


def test_stop_and_remove_of_unknown_ids_succeed(shared_hulld: Hulld) -> None:
    for runtime in (shared_hulld.runtime(), shared_hulld.private_runtime()):
        for unknown in UNKNOWN_IDS:
            stop_and_remove(runtime, unknown, unknown)


# --- 7. Status ------------------------------------------------------------------------------------------------


def runtime_ready(hulld: Hulld) -> tuple[bool, str]:
    """RuntimeReady's status and reason, waiting for hulld to serve (it may be restarting)."""
    answer = hulld.runtime().Status(cri.StatusRequest(), timeout=30, wait_for_ready=True)
    condition = next(c for c in answer.status.conditions if c.type == "RuntimeReady")
    return bool(condition.status), str(condition.reason)


def use_default_runtime(hulld: Hulld, runtime_path: Path | str) -> None:
    """Point [handlers.runc] (the default handler) at ``runtime_path`` and have hulld reload its config."""
    text = hulld.config_path.read_text()
    current = next(line for line in text.splitlines() if line.startswith("runtime_path = "))  # [handlers.runc]'s
    hulld.write_config(text.replace(current, f'runtime_path = "{runtime_path}"', 1))
    assert hulld.process is not None
    hulld.process.popen.send_signal(signal.SIGHUP)


def test_status_says_when_the_default_handler_cannot_run(hulld: Hulld, tmp_path: Path) -> None:
    assert runtime_ready(hulld) == (True, "")
    not_executable = tmp_path / "not-executable"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    for unusable in (tmp_path / "missing", tmp_path, not_executable):
        use_default_runtime(hulld, unusable)
        wait_until(lambda: runtime_ready(hulld) == (False, "DefaultHandlerMissing"), what=f"{unusable} noticed")
    hulld.stop()  # and so it starts: serving, saying why it cannot run pods
    hulld.start()
    assert runtime_ready(hulld) == (False, "DefaultHandlerMissing")
    use_default_runtime(hulld, RUNC)
    wait_until(lambda: runtime_ready(hulld) == (True, ""), what="runc back")


def test_status_says_when_hulld_cannot_write_its_state(hulld: Hulld) -> None:
    """A read-only storage root (a full or failing disk remounted read-only) makes every pod fail to start."""
    root = str(hulld.root)
    subprocess.run(["mount", "--bind", root, root], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", root], check=True)
        assert runtime_ready(hulld) == (False, "StateNotWritable")
    finally:
        subprocess.run(["umount", root], check=True)
    assert runtime_ready(hulld) == (True, "")


def test_status_says_recovering_until_start_up_recovery_ends(
    hulld: Hulld, oci_registry: OCIRegistry, tmp_path: Path
) -> None:
    """hulld serves Status while it recovers (the kubelet asks it first); until recovery ends, pods cannot run.
    The recovery is made slow for real: the runtime's ``state``, which recovery asks of every running
    container, takes seconds once a marker file exists."""
    slow = tmp_path / "slow-runc"
    marker = tmp_path / "slow"
    slow.write_text(
        f'#!/bin/sh\nif [ -e {marker} ]; then for arg; do [ "$arg" = state ] && sleep 6; done; fi\nexec {RUNC} "$@"\n'
    )
    slow.chmod(0o755)
    use_default_runtime(hulld, slow)
    wait_until(lambda: runtime_ready(hulld) == (True, ""), what="the wrapped runc in use")
    runtime = hulld.runtime()
    image = oci_registry.images["busybox"].reference
    hulld.images().PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=image)))
    host_network = {"linux": {"securityContext": {"namespaceOptions": {"network": "NODE"}}}}
    pod = run_pod(runtime, pod_config(hulld, "recovering", host_network))
    start_container(runtime, pod, container_config("sleeper", image, SLEEP))
    marker.touch()
    assert hulld.process is not None
    os.killpg(hulld.process.popen.pid, signal.SIGKILL)
    hulld.process.popen.wait()
    hulld.start(wait_recovered=False)
    assert runtime_ready(hulld) == (False, "Recovering")
    with pytest.raises(grpc.RpcError) as held:
        runtime.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=30)
    assert held.value.code() == grpc.StatusCode.UNAVAILABLE
    wait_until(lambda: runtime_ready(hulld) == (True, ""), timeout=60, what="recovery to end")
    marker.unlink()
    runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
