"""hulld's ImageService against the real registry, driven by crictl and by a gRPC client."""

from __future__ import annotations

import json
import os
import stat
import threading

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from kubehull_harness.pytest_plugin import OCIRegistry
from tests.hulld.conftest import Hulld

pytestmark = [pytest.mark.registry, pytest.mark.root]


def test_version_status_and_root_only_sockets_and_state(hulld: Hulld) -> None:
    version = hulld.crictl("version").stdout
    assert "RuntimeName:  hulld" in version
    assert "RuntimeVersion:  0.1.0" in version
    assert "RuntimeApiVersion:  v1" in version
    info = json.loads(hulld.crictl("info").stdout)
    conditions = {condition["type"]: condition for condition in info["status"]["conditions"]}
    assert conditions["RuntimeReady"]["status"] is True
    assert conditions["NetworkReady"]["status"] is False  # no CNI configuration in this test's directory
    assert "no CNI network configuration" in conditions["NetworkReady"]["message"]
    handlers = {handler.get("name", "") for handler in info["runtimeHandlers"]}
    assert handlers == {"", "runc", "runsc", "shim-runc", "shim-runc-2-4", "shim-runsc"}
    for socket in (hulld.socket, hulld.private_socket):
        mode = os.stat(socket).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(socket.parent).st_mode) == 0o700
    # Image layers and root filesystems hold the images' set-id binaries and device nodes: root's alone.
    assert stat.S_IMODE(os.stat(hulld.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(hulld.work_dir / "state").st_mode) == 0o700
    runtime_config = hulld.runtime().RuntimeConfig(cri.RuntimeConfigRequest())
    assert runtime_config.linux.cgroup_driver == cri.CGROUPFS


def test_pull_list_inspect_remove(hulld: Hulld, oci_registry: OCIRegistry) -> None:
    image = oci_registry.images["busybox"]
    pulled = hulld.crictl("pull", image.reference).stdout
    assert "Image is up to date for sha256:" in pulled
    listed = json.loads(hulld.crictl("images", "-o", "json").stdout)["images"]
    assert [entry["repoTags"] for entry in listed] == [[image.reference]]
    assert listed[0]["repoDigests"] == [image.by_digest]
    status = json.loads(hulld.crictl("inspecti", image.reference).stdout)
    assert status["status"]["id"] == listed[0]["id"]
    assert status["status"]["uid"] == {"value": "0"}
    assert status["info"]["config"]["Cmd"] == ["sh"]
    # The same image by digest and by ID.
    assert json.loads(hulld.crictl("inspecti", image.by_digest).stdout)["status"]["id"] == status["status"]["id"]
    fs = json.loads(hulld.crictl("imagefsinfo", "-o", "json").stdout)
    assert int(fs["status"]["imageFilesystems"][0]["usedBytes"]["value"]) > 1_000_000  # busybox is ~1 MB+
    hulld.crictl("rmi", image.reference)
    assert json.loads(hulld.crictl("images", "-o", "json").stdout)["images"] == []
    assert list((hulld.root / "images" / "layers").iterdir()) == []  # its layer went with it
    # Removing what is not there succeeds (CRI); an unknown image's status is empty, not an error.
    hulld.images().RemoveImage(cri.RemoveImageRequest(image=cri.ImageSpec(image=image.reference)))
    assert not hulld.images().ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image="nope:1"))).HasField("image")


def test_concurrent_pulls_of_one_image_share_one_download(hulld: Hulld, oci_registry: OCIRegistry) -> None:
    image = oci_registry.images["webserver"]
    results: list[str] = []

    def pull() -> None:
        answer = hulld.images().PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=image.reference)))
        results.append(answer.image_ref)

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert len(set(results)) == 1
    metrics = hulld.metrics()
    downloaded = next(
        float(line.split()[1]) for line in metrics.splitlines() if line.startswith("hulld_image_pull_bytes_total ")
    )
    size = json.loads(hulld.crictl("inspecti", image.reference).stdout)["status"]["size"]
    assert downloaded == float(size)  # every byte fetched once (manifest aside)


def test_errors_are_clear(hulld: Hulld, oci_registry: OCIRegistry) -> None:
    images = hulld.images()
    with pytest.raises(grpc.RpcError) as missing:
        images.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=f"{oci_registry.host}/kubehull/nope:1")))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "kubehull/nope:1" in missing.value.details()
    with pytest.raises(grpc.RpcError) as invalid:
        images.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image="Not A Reference")))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as unsupported:
        hulld.runtime().CheckpointContainer(cri.CheckpointContainerRequest(container_id="x"))
    assert unsupported.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert unsupported.value.details() == "CheckpointContainer: hulld does not support container checkpoints"
    metrics = hulld.metrics()
    assert 'hulld_cri_operation_errors_total{code="NOT_FOUND",handler="",operation="PullImage"} 1.0' in metrics
    assert 'hulld_image_pulls_total{result="NotFound"} 1.0' in metrics
