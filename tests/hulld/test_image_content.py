"""What hulld stores is exactly the image: whiteouts as overlayfs sees them, zstd layers, indexes, and no
trace of a pull whose bytes do not match their digest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import urllib.request
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from kubehull_harness import images
from kubehull_harness.pytest_plugin import OCIRegistry
from tests.hulld.conftest import Hulld

pytestmark = [pytest.mark.registry, pytest.mark.root]


def pull(hulld: Hulld, reference: str) -> str:
    answer = hulld.images().PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=reference)))
    return str(answer.image_ref)


def layer_dirs(hulld: Hulld, image_id: str) -> list[Path]:
    record = json.loads((hulld.root / "images" / "records" / f"{image_id.split(':')[1]}.json").read_text())
    return [hulld.root / "images" / "layers" / diff_id.split(":")[1] for diff_id in record["layers"]]


def test_whiteouts_and_opaque_directories_work_in_overlayfs(
    hulld: Hulld, oci_registry: OCIRegistry, tmp_path: Path
) -> None:
    image_id = pull(hulld, oci_registry.images["layered"].reference)
    lowers = layer_dirs(hulld, image_id)
    assert len(lowers) == 3
    merged = tmp_path / "merged"
    merged.mkdir()
    lowerdir = ":".join(str(layer) for layer in reversed(lowers))  # overlayfs wants the top layer first
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir}", str(merged)], check=True)
    try:
        assert (merged / "data/keep").read_text() == "kept\n"
        assert not (merged / "data/gone").exists()
        assert sorted(path.name for path in (merged / "cache").iterdir()) == ["new"]
        assert (merged / "bin/sh").exists()
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_zstd_layers(hulld: Hulld, oci_registry: OCIRegistry) -> None:
    spec = dataclasses.replace(images.TEST_IMAGES["busybox"], repository="kubehull/busybox-zstd")
    pushed = oci_registry.push(spec, "--dest-compress-format=zstd")
    manifest = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://{oci_registry.host}/v2/{pushed.repository}/manifests/{pushed.digest}",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            )
        ).read()
    )
    assert manifest["layers"][0]["mediaType"].endswith("+zstd")
    image_id = pull(hulld, pushed.reference)
    assert (layer_dirs(hulld, image_id)[0] / "bin/busybox").is_file()


def test_index_resolves_to_this_platform(hulld: Hulld, oci_registry: OCIRegistry) -> None:
    busybox, web = oci_registry.images["busybox"], oci_registry.images["webserver"]
    repository = "kubehull/multiarch"
    for image, tag in ((busybox, "amd64"), (web, "arm64")):  # the registry wants what an index names in its repo
        oci_registry.push(
            dataclasses.replace(
                images.TEST_IMAGES["busybox" if image is busybox else "webserver"], repository=repository, tag=tag
            )
        )

    def descriptor(tag: str, architecture: str) -> dict[str, object]:
        request = urllib.request.Request(
            f"http://{oci_registry.host}/v2/{repository}/manifests/{tag}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        body = urllib.request.urlopen(request).read()  # noqa: S310
        return {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
            "size": len(body),
            "platform": {"os": "linux", "architecture": architecture},
        }

    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [descriptor("arm64", "arm64"), descriptor("amd64", "amd64")],
        }
    ).encode()
    put = urllib.request.Request(
        f"http://{oci_registry.host}/v2/{repository}/manifests/multi",
        data=index,
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
    )
    urllib.request.urlopen(put)  # noqa: S310
    image_id = pull(hulld, f"{oci_registry.host}/{repository}:multi")
    expected = pull(hulld, f"{oci_registry.host}/{repository}:amd64")
    assert image_id == expected
    status = hulld.images().ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=image_id))).image
    index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
    assert f"{oci_registry.host}/{repository}@{index_digest}" in status.repo_digests


def test_a_blob_that_fails_verification_leaves_nothing(hulld: Hulld, oci_registry: OCIRegistry) -> None:
    spec = dataclasses.replace(images.TEST_IMAGES["layered"], repository="kubehull/corrupt")
    pushed = oci_registry.push(spec)
    manifest = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://{oci_registry.host}/v2/{pushed.repository}/manifests/{pushed.digest}",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            )
        ).read()
    )
    top = manifest["layers"][-1]["digest"].split(":")[1]
    data = oci_registry.storage / "docker/registry/v2/blobs/sha256" / top[:2] / top / "data"
    original = data.read_bytes()
    data.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # one flipped byte, same size
    try:
        with pytest.raises(grpc.RpcError) as failed:
            pull(hulld, pushed.reference)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "failed verification" in failed.value.details()
        assert hulld.images().ListImages(cri.ListImagesRequest()).images == []
        assert not (hulld.root / "images" / "blobs" / "sha256" / top).exists()
        assert list((hulld.root / "images" / "ingest").iterdir()) == []
    finally:
        data.write_bytes(original)
    pull(hulld, pushed.reference)  # the registry mended, the same pull succeeds
