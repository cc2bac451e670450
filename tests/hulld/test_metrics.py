"""The CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics), as a kubelet reads them for /metrics/cadvisor:
every metric described is reported with one value per label key, and the values are the container's own."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cri_api.v1 import api_pb2 as cri

from kubehull_harness.pytest_plugin import OCIRegistry
from tests.hulld.conftest import Hulld
from tests.hulld.test_lifecycle import pod_config, write

pytestmark = [pytest.mark.registry, pytest.mark.root, pytest.mark.slow]

BLOCK_IO = {
    "container_blkio_device_usage_total",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
}
"""Reported per block device the container used: none on a node whose disk reports no per-device I/O."""
MEMORY_LIMIT = 96 * 1024 * 1024
GVISOR_KNOWS = {
    *(
        f"container_network_{way}_{what}_total"
        for way in ("receive", "transmit")
        for what in ("bytes", "packets", "packets_dropped", "errors")
    ),
    "container_cpu_usage_seconds_total",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_fs_usage_bytes",
    "container_fs_limit_bytes",
    "container_fs_inodes_total",
    "container_fs_inodes_free",
    "container_processes",
    "container_threads",
    "container_start_time_seconds",
    "container_last_seen",
}
SANDBOXED = {"runsc": GVISOR_KNOWS, "shim-runsc": GVISOR_KNOWS - {"container_processes"}}
"""What hulld reports of a gVisor container: the sandbox's own accounting (``runsc events`` and ``ps``; through
containerd's shim, its Stats, which count threads but not processes), the pod's network interfaces, the writable
layer and times. The rest is left out, not sent as 0."""


@pytest.mark.parametrize("handler", ["runc", "runsc", "shim-runc", "shim-runsc"])
def test_pod_and_container_metrics(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, handler: str
) -> None:
    hulld = hulld_with_network
    image = oci_registry.images["busybox"].reference
    hulld.crictl("pull", image)
    pod_file = pod_config(tmp_path, f"metrics-{handler}")
    pod = hulld.crictl("runp", "--runtime", handler, pod_file).stdout.strip()
    config: dict[str, object] = {
        "metadata": {"name": "worker"},
        "image": {"image": image},
        # Three processes, two of them holding a socket each.
        "command": ["sh", "-c", "nc -l -p 7001 & nc -l -p 7002 & sleep 1000"],
        "log_path": "worker.log",
        "linux": {
            "resources": {
                "cpu_period": 100000,
                "cpu_quota": 50000,
                "cpu_shares": 512,
                "memory_limit_in_bytes": MEMORY_LIMIT,
            }
        },
    }
    container = hulld.crictl("create", pod, write(tmp_path / "worker.json", config), pod_file).stdout.strip()
    hulld.crictl("start", container)
    started = time.time()
    hulld.crictl("exec", "-s", container, "sh", "-c", "dd if=/dev/zero of=/written bs=1M count=3 && sync")

    runtime = hulld.runtime()
    described = runtime.ListMetricDescriptors(cri.ListMetricDescriptorsRequest()).descriptors
    label_keys = {descriptor.name: list(descriptor.label_keys) for descriptor in described}
    assert len(label_keys) == len(described)  # no name twice
    assert all(descriptor.help for descriptor in described)
    assert all(keys[:5] == ["container", "pod", "namespace", "id", "image"] for keys in label_keys.values())

    pods = runtime.ListPodSandboxMetrics(cri.ListPodSandboxMetricsRequest()).pod_metrics
    assert [item.pod_sandbox_id for item in pods] == [pod]
    assert [item.container_id for item in pods[0].container_metrics] == [container]
    values: dict[str, dict[tuple[str, ...], int]] = {}
    for metric in [*pods[0].metrics, *pods[0].container_metrics[0].metrics]:
        assert len(metric.label_values) == len(label_keys[metric.name]), metric.name
        labels = dict(zip(label_keys[metric.name], metric.label_values, strict=True))
        assert (labels["pod"], labels["namespace"]) == (f"metrics-{handler}", "default")
        extra = tuple(metric.label_values[5:])
        values.setdefault(metric.name, {})[extra] = metric.value.value
        if metric.name.startswith("container_network_"):
            assert (labels["container"], labels["id"]) == ("POD", pod)
        else:
            assert (labels["container"], labels["id"], labels["image"]) == ("worker", container, image)

    one = {name: next(iter(by_labels.values())) for name, by_labels in values.items()}
    assert set(values["container_network_receive_bytes_total"]) == {("eth0",)}  # loopback left out
    assert values["container_cpu_usage_seconds_total"].keys() == {("total",)}
    assert abs(one["container_start_time_seconds"] - started) < 30
    assert abs(one["container_last_seen"] - time.time()) < 30
    assert one["container_fs_usage_bytes"] >= 3 * 1024 * 1024  # /written, in the writable layer
    assert one["container_fs_limit_bytes"] > one["container_fs_usage_bytes"]
    assert one["container_fs_inodes_total"] > one["container_fs_inodes_free"] > 0
    assert one["container_memory_working_set_bytes"] > 0
    assert one["container_threads"] >= 3
    if handler in SANDBOXED:
        assert set(values) == SANDBOXED[handler]
        assert one.get("container_processes", 3) == 3
        return
    assert one["container_processes"] == 3
    # Every metric described has values (block I/O where the disk reports it).
    assert set(label_keys) - BLOCK_IO <= set(values), set(label_keys) - set(values)
    assert one["container_threads"] == 3
    assert one["container_sockets"] == 2
    assert one["container_file_descriptors"] >= 3 * 3
    # The container's spec, as its cgroup holds it.
    assert one["container_spec_cpu_period"] == 100000
    assert one["container_spec_cpu_quota"] == 50000
    assert one["container_spec_cpu_shares"] == 512
    assert one["container_spec_memory_limit_bytes"] == MEMORY_LIMIT
    assert one["container_spec_memory_reservation_limit_bytes"] == 0  # none: unlimited reads as 0

    # A stopped container is not reported; the pod (its network) still is.
    hulld.crictl("stop", "--timeout", "0", container)
    pods = runtime.ListPodSandboxMetrics(cri.ListPodSandboxMetricsRequest()).pod_metrics
    assert [list(item.container_metrics) for item in pods] == [[]]
    assert {metric.name for metric in pods[0].metrics} == {
        name for name in label_keys if name.startswith("container_network_")
    }
    assert json.loads(hulld.crictl("inspectp", pod).stdout)["status"]["state"] == "SANDBOX_READY"
