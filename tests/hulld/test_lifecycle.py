"""Pods and containers through hulld, driven by crictl like the kubelet would: runc and gVisor (runsc)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc

from kubehull_harness.pytest_plugin import OCIRegistry
from kubehull_harness.waiting import wait_until
from tests.hulld.conftest import Hulld

pytestmark = [pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

SCRIPT = "trap 'echo stopping; exit 7' TERM; echo hello from $(hostname); while true; do sleep 0.2; done"


def write(path: Path, data: dict[str, object]) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def pod_config(tmp_path: Path, name: str, labels: dict[str, str] | None = None) -> str:
    return write(
        tmp_path / f"{name}-pod.json",
        {
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "attempt": 1},
            "hostname": f"{name}-host",
            "log_directory": str(tmp_path / "logs" / name),
            "labels": labels or {},
            "linux": {},
        },
    )


def container_config(
    tmp_path: Path, name: str, image: str, command: list[str], labels: dict[str, str] | None = None
) -> str:
    return write(
        tmp_path / f"{name}-ctr.json",
        {
            "metadata": {"name": name},
            "image": {"image": image},
            "command": command,
            "log_path": f"{name}.log",
            "labels": labels or {},
            "linux": {},
        },
    )


# shim-runc is containerd 1.6's runc shim (task API v2, an address printed by start), shim-runc-2-4 containerd
# 2.4's (task API v3, containerd 2.3's bootstrap protocol), shim-runsc gVisor's (v2, bootstrap JSON).
@pytest.mark.parametrize("handler", ["runc", "runsc", "shim-runc", "shim-runc-2-4", "shim-runsc"])
def test_full_lifecycle(hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, handler: str) -> None:
    hulld = hulld_with_network
    image = oci_registry.images["busybox"].reference
    hulld.crictl("pull", image)
    pod_file = pod_config(tmp_path, f"life-{handler}")
    pod = hulld.crictl("runp", "--runtime", handler, pod_file).stdout.strip()
    pod_status = json.loads(hulld.crictl("inspectp", pod).stdout)["status"]
    assert pod_status["state"] == "SANDBOX_READY"
    assert pod_status["runtimeHandler"] == handler
    pod_ip = pod_status["network"]["ip"]
    assert pod_ip.startswith("10.231.0.")

    container = hulld.crictl(
        "create", pod, container_config(tmp_path, "main", image, ["sh", "-c", SCRIPT]), pod_file
    ).stdout.strip()
    hulld.crictl("start", container)
    listed = json.loads(hulld.crictl("ps", "-o", "json").stdout)["containers"]
    assert [(c["id"], c["state"]) for c in listed] == [(container, "CONTAINER_RUNNING")]
    image_id = json.loads(hulld.crictl("inspecti", image).stdout)["status"]["id"]
    assert (listed[0]["imageRef"], listed[0]["imageId"]) == (image_id, image_id)
    wait_until(lambda: "hello from" in hulld.crictl("logs", container).stdout, what="the container's log")
    assert hulld.crictl("logs", container).stdout.strip() == f"hello from life-{handler}-host"
    log_lines = (tmp_path / "logs" / f"life-{handler}" / "main.log").read_text().splitlines()
    stamp, stream, tag, message = log_lines[0].split(" ", 3)
    assert (stream, tag, message) == ("stdout", "F", f"hello from life-{handler}-host")
    assert stamp.endswith("Z") or "+" in stamp

    addresses = hulld.crictl("exec", "-s", container, "ip", "-4", "addr", "show", "eth0").stdout
    assert f"inet {pod_ip}/24" in addresses
    assert hulld.crictl("exec", "-s", container, "id", "-u").stdout.strip() == "0"
    kernel = hulld.crictl("exec", "-s", container, "uname", "-r").stdout.strip()
    gvisor = handler.endswith("runsc")
    if gvisor:  # really in gVisor: its own kernel, and its boot messages
        assert "gvisor" in kernel
        assert "Starting gVisor" in hulld.crictl("exec", "-s", container, "dmesg").stdout
    else:
        assert kernel == os.uname().release

    def stats() -> dict[str, Any]:
        found: dict[str, Any] = json.loads(hulld.crictl("stats", "-o", "json", container).stdout)["stats"][0]
        return found

    assert stats()["attributes"]["id"] == container
    # gVisor's containers are not host processes: their usage comes from the sandbox (runsc events, the shim's
    # Stats), not from their (empty) host cgroups. The sandbox's CPU accounting can lag the container's first
    # output (0 seen once in CI through the runsc shim), so its CPU time is awaited.
    assert int(stats()["memory"]["workingSetBytes"]["value"]) > 0
    wait_until(lambda: int(stats()["cpu"]["usageCoreNanoSeconds"]["value"]) > 0, 30, "CPU time in the stats")
    for listed_stats in (
        hulld.runtime().ListPodSandboxStats(cri.ListPodSandboxStatsRequest()).stats,
        [hulld.runtime().PodSandboxStats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats],
    ):
        assert [item.attributes.id for item in listed_stats] == [pod]
        assert [c.attributes.id for c in listed_stats[0].linux.containers] == [container]
        assert listed_stats[0].linux.memory.working_set_bytes.value > 0  # the pod's usage is its containers'
    hulld.crictl("stop", "--timeout", "10", container)
    status = json.loads(hulld.crictl("inspect", container).stdout)["status"]
    assert status["state"] == "CONTAINER_EXITED"
    assert status["exitCode"] == 7  # the TERM trap ran: a graceful stop, not a kill
    assert status["reason"] == "Error"
    hulld.crictl("rm", container)
    hulld.crictl("stopp", pod)
    hulld.crictl("stopp", pod)  # idempotent
    hulld.crictl("rmp", pod)
    assert json.loads(hulld.crictl("pods", "-o", "json").stdout)["items"] == []
    hulld.crictl("rmi", image)
    leftovers = [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if str(hulld.root) in line or f"{hulld.work_dir}/state/ns/" in line
    ]
    assert leftovers == []


@pytest.mark.parametrize("handler", ["runc", "runsc", "shim-runc"])
def test_exec_sync_output_is_capped(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, handler: str
) -> None:
    """A command that floods stdout: hulld keeps the first 8 MiB of each stream (so that both fit the kubelet's
    16 MiB message limit), drains the rest so the command can finish, and reports its exit code."""
    hulld = hulld_with_network
    image = oci_registry.images["busybox"].reference
    hulld.crictl("pull", image)
    pod_file = pod_config(tmp_path, f"flood-{handler}")
    pod = hulld.crictl("runp", "--runtime", handler, pod_file).stdout.strip()
    container = hulld.crictl(
        "create", pod, container_config(tmp_path, "idle", image, ["sleep", "600"]), pod_file
    ).stdout.strip()
    hulld.crictl("start", container)
    channel = grpc.insecure_channel(
        f"unix://{hulld.socket}", options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    )
    flood = "head -c 41943040 /dev/zero; head -c 1000 /dev/zero >&2; exit 3"  # 40 MiB out, 1000 bytes err
    response = api_pb2_grpc.RuntimeServiceStub(channel).ExecSync(
        cri.ExecSyncRequest(container_id=container, cmd=["sh", "-c", flood], timeout=60), timeout=90
    )
    assert (len(response.stdout), len(response.stderr), response.exit_code) == (8 * 1024 * 1024, 1000, 3)
    assert "ExecSync stdout: kept the first 8388608 bytes, dropped 33554432 more" in hulld.log
    hulld.crictl("rm", "--force", container)
    hulld.crictl("stopp", pod)
    hulld.crictl("rmp", pod)


@pytest.mark.parametrize("handler", ["runc", "shim-runc", "shim-runsc"])
def test_hulld_killed_and_restarted_keeps_containers(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, handler: str
) -> None:
    """Containers outlive hulld (their monitor is conmon, or the pod's shim); an exit while hulld is down is
    found at restart, their output goes on reaching their logs, and the restarted hulld drives them all."""
    hulld = hulld_with_network
    image = oci_registry.images["busybox"].reference
    hulld.crictl("pull", image)
    pod_file = pod_config(tmp_path, "survivor")
    pod = hulld.crictl("runp", "--runtime", handler, pod_file).stdout.strip()
    keeps = hulld.crictl(
        "create", pod, container_config(tmp_path, "keeps", image, ["sh", "-c", SCRIPT]), pod_file
    ).stdout.strip()
    ends = hulld.crictl(
        "create",
        pod,
        container_config(tmp_path, "ends", image, ["sh", "-c", "sleep 2; echo written while hulld was down; exit 5"]),
        pod_file,
    ).stdout.strip()
    hulld.crictl("start", keeps)
    hulld.crictl("start", ends)

    assert hulld.process is not None
    os.killpg(hulld.process.popen.pid, 9)
    hulld.process.popen.wait()
    time.sleep(3)  # "ends" exits while hulld is down
    hulld.start()

    states = {c["id"]: c["state"] for c in json.loads(hulld.crictl("ps", "-a", "-o", "json").stdout)["containers"]}
    assert states == {keeps: "CONTAINER_RUNNING", ends: "CONTAINER_EXITED"}
    ended = json.loads(hulld.crictl("inspect", ends).stdout)["status"]
    assert ended["exitCode"] == 5
    assert ended["reason"] == "Error"
    if handler == "runc":
        # conmon writes the log itself. A shim writes into a FIFO that only hulld reads: what a container writes
        # while hulld is down waits in the FIFO, and is lost if the container ends before hulld is back
        # (containerd's CRI loses it the same way; docs/hulld.md).
        assert hulld.crictl("logs", ends).stdout.strip() == "written while hulld was down"
    assert hulld.crictl("exec", "-s", keeps, "echo", "still here").stdout.strip() == "still here"
    assert json.loads(hulld.crictl("inspectp", pod).stdout)["status"]["state"] == "SANDBOX_READY"
    hulld.crictl("stop", "--timeout", "10", keeps)
    assert json.loads(hulld.crictl("inspect", keeps).stdout)["status"]["exitCode"] == 7
    assert hulld.crictl("logs", keeps).stdout.split("\n")[-2:] == ["stopping", ""]  # still logged after the restart
    hulld.crictl("rmp", "-f", pod)
    assert hulld.crictl("pods", "-q").stdout.split() == []


def test_interrupted_create_is_garbage_collected_at_start(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path
) -> None:
    """A crash between claiming a container's name and creating it leaves a record without a PID. Timing a
    real crash into that window is not reliable, so this test writes that state as the crash would leave it:
    the record a real CreateContainer wrote, with its PID reset, and a directory without any record."""
    hulld = hulld_with_network
    image = oci_registry.images["busybox"].reference
    hulld.crictl("pull", image)
    pod_file = pod_config(tmp_path, "crashy")
    pod = hulld.crictl("runp", pod_file).stdout.strip()
    container = hulld.crictl(
        "create", pod, container_config(tmp_path, "half", image, ["sh", "-c", SCRIPT]), pod_file
    ).stdout.strip()
    hulld.stop()
    record_path = hulld.root / "records" / "containers" / f"{container}.json"
    record = json.loads(record_path.read_text())
    record["status"]["pid"] = 0
    record_path.write_text(json.dumps(record))
    orphan = hulld.root / "containers" / ("0" * 64)
    (orphan / "upper").mkdir(parents=True)

    hulld.start()
    assert json.loads(hulld.crictl("ps", "-a", "-o", "json").stdout)["containers"] == []
    assert not record_path.exists()
    assert not (hulld.root / "containers" / container).exists()
    assert not orphan.exists()
    # The name is free again.
    hulld.crictl("create", pod, container_config(tmp_path, "half", image, ["sh", "-c", SCRIPT]), pod_file)


def test_pod_whose_infra_a_crash_left_unstarted_is_not_ready_and_cleans_up(
    hulld_with_network: Hulld, tmp_path: Path
) -> None:
    """A crash between recording a pod's infra container and recording its PID: at start, hulld marks the pod
    not ready (its containers could not join it), and stopping and removing it removes the infra container
    too. The record is written as the crash would leave it, as in the test above."""
    hulld = hulld_with_network
    pod = hulld.crictl("runp", pod_config(tmp_path, "infra-crash")).stdout.strip()  # POD PID mode: an infra
    hulld.stop()
    record_path = hulld.root / "records" / "sandboxes" / f"{pod}.json"
    record = json.loads(record_path.read_text())
    infra = record["status"]["infra_id"]
    assert infra
    record["status"]["infra_pid"] = 0
    record_path.write_text(json.dumps(record))

    hulld.start()
    assert json.loads(hulld.crictl("inspectp", pod).stdout)["status"]["state"] == "SANDBOX_NOTREADY"
    hulld.crictl("stopp", pod)
    hulld.crictl("rmp", pod)
    runtime_root = f"--root={hulld.work_dir / 'state' / 'runtimes' / 'runc'}"
    listed = subprocess.run(["runc", runtime_root, "list", "-q"], capture_output=True, text=True, check=True).stdout
    assert infra not in listed.split()


def test_container_events_stream(hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path) -> None:
    hulld = hulld_with_network
    image = oci_registry.images["busybox"].reference
    hulld.crictl("pull", image)
    stream = hulld.runtime().GetContainerEvents(cri.GetEventsRequest())
    seen: list[tuple[str, int]] = []

    def listen() -> None:
        try:
            for event in stream:
                seen.append((event.container_id, event.container_event_type))
        except grpc.RpcError:
            return  # cancelled at the end of the test

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)
    pod_file = pod_config(tmp_path, "events")
    pod = hulld.crictl("runp", pod_file).stdout.strip()
    container = hulld.crictl(
        "create", pod, container_config(tmp_path, "brief", image, ["sh", "-c", "exit 3"]), pod_file
    ).stdout.strip()
    hulld.crictl("start", container)
    # Nobody asks about the container: its exit is noticed and announced all the same.
    wait_until(lambda: (container, cri.CONTAINER_STOPPED_EVENT) in seen, what="the stopped event")
    hulld.crictl("rm", container)
    wait_until(lambda: (container, cri.CONTAINER_DELETED_EVENT) in seen, what="the deleted event")
    stream.cancel()
    mine = [kind for identifier, kind in seen if identifier == container]
    assert mine == [
        cri.CONTAINER_CREATED_EVENT,
        cri.CONTAINER_STARTED_EVENT,
        cri.CONTAINER_STOPPED_EVENT,
        cri.CONTAINER_DELETED_EVENT,
    ]


def test_security_context_is_applied(hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path) -> None:
    hulld = hulld_with_network
    image = oci_registry.images["busybox"].reference
    hulld.crictl("pull", image)
    pod_file = pod_config(tmp_path, "secure")
    pod = hulld.crictl("runp", pod_file).stdout.strip()
    config = json.loads(Path(container_config(tmp_path, "locked", image, ["sleep", "3600"])).read_text())
    config["linux"] = {
        "security_context": {
            "run_as_user": {"value": 1000},
            "run_as_group": {"value": 1000},
            "supplemental_groups": [4242],
            "readonly_rootfs": True,
            "no_new_privs": True,
            "seccomp": {"profile_type": 0},
            "capabilities": {"drop_capabilities": ["ALL"], "add_capabilities": ["NET_BIND_SERVICE"]},
        }
    }
    locked = hulld.crictl("create", pod, write(tmp_path / "locked.json", config), pod_file).stdout.strip()
    hulld.crictl("start", locked)
    plain = hulld.crictl(
        "create", pod, container_config(tmp_path, "plain", image, ["sleep", "3600"]), pod_file
    ).stdout.strip()
    hulld.crictl("start", plain)

    def run(container: str, *command: str) -> str:
        return hulld.crictl("exec", "-s", container, *command, check=False).stdout

    assert run(locked, "id").split() == [
        "uid=1000(kubehull)",
        "gid=1000(kubehull)",
        "groups=1000(kubehull),2000(extra),4242",
    ]
    status = run(locked, "cat", "/proc/self/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Seccomp"].strip() == "2"  # RuntimeDefault: a filter is installed
    assert fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapBnd"].strip(), 16) == 1 << 10  # only CAP_NET_BIND_SERVICE
    assert "Read-only file system" in hulld.crictl("exec", "-s", locked, "touch", "/x", check=False).stderr
    plain_status = run(plain, "cat", "/proc/self/status")
    assert "Seccomp:\t0" in plain_status  # no profile named: Unconfined, as the CRI says
    assert run(plain, "id", "-u").strip() == "0"


def test_private_socket_pods_are_invisible_to_the_kubelet_socket(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path
) -> None:
    """The node agent probes handlers through hulld's private socket: the kubelet, listing everything on its
    own socket, never sees those pods (it would kill and collect them as pods it does not know), and the
    agent does not see the kubelet's."""
    hulld = hulld_with_network
    image = oci_registry.images["busybox"].reference
    hulld.crictl("pull", image)
    pod_file = pod_config(tmp_path, "private")
    pod = hulld.crictl("runp", pod_file, private=True).stdout.strip()
    ctr_file = container_config(tmp_path, "p", image, ["sleep", "60"])
    container = hulld.crictl("create", pod, ctr_file, pod_file, private=True).stdout.strip()
    hulld.crictl("start", container, private=True)
    public = hulld.crictl("runp", pod_config(tmp_path, "public")).stdout.strip()

    assert hulld.crictl("pods", "-q").stdout.split() == [public]
    assert hulld.crictl("ps", "-a", "-q").stdout.split() == []
    assert hulld.crictl("pods", "-q", private=True).stdout.split() == [pod]
    assert hulld.crictl("ps", "-q", private=True).stdout.split() == [container]
    running = json.loads(hulld.crictl("inspect", container, private=True).stdout)["status"]["state"]
    assert running == "CONTAINER_RUNNING"
    assert "not found" in hulld.crictl("inspect", container, check=False).stderr
    stats = hulld.runtime().ListContainerStats(cri.ListContainerStatsRequest())
    assert [stat.attributes.id for stat in stats.stats] == []
    hulld.crictl("rmp", "-f", pod, private=True)
    hulld.crictl("rmp", "-f", public)
