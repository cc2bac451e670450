"""Hostile images through a real hulld pulling from the local registry (issue #11: they never reach the host).

One test per attack class: layers that reach host files through symlinks and hard links, whiteouts and files
under a symlinked parent, forged overlayfs xattrs, layer count, size and entry bombs against the [images]
limits, and an image /etc/passwd that points at a host file or a device. Each test plants canaries on the
host (outside hulld's root), checks them afterwards whatever the answer was, and checks that hulld still
serves.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from kubehull_harness import images
from kubehull_harness.pytest_plugin import OCIRegistry
from tests.hulld.conftest import Hulld
from tests.hulld.security import canary
from tests.hulld.security.canary import Canaries
from tests.hulld.security.layers import OPAQUE, WHITEOUT, Entry, write_layer

pytestmark = [pytest.mark.registry, pytest.mark.root]

IMAGE_LIMITS = """
[images]
max_layer_entries = 50
max_layer_bytes = 1048576
max_layers = 3
max_manifest_bytes = 65536
max_config_bytes = 65536
"""

HOST_USERS = "canaryuser:x:4242:4242::/:/bin/sh\n"
"""A host file an image's /etc/passwd points at: were it read, the container would run as 4242."""


@dataclasses.dataclass(frozen=True)
class PushedLayers:
    """An image made of hand-made layers, pushed to the local registry."""

    reference: str
    diff_ids: tuple[str, ...]


@pytest.fixture
def canaries(tmp_path: Path) -> Canaries:
    return Canaries.plant(tmp_path / "host")


@pytest.fixture
def limited_hulld(tmp_path: Path, component_logs: Path, oci_registry: OCIRegistry) -> Iterator[Hulld]:
    """A hulld whose [images] limits are small enough to reach with a test image."""
    running = Hulld(tmp_path, component_logs, oci_registry.host, extra_config=IMAGE_LIMITS)
    yield running
    running.tear_down()


def push_layers(
    oci_registry: OCIRegistry,
    tmp_path: Path,
    name: str,
    layers: Sequence[Sequence[Entry]],
    *,
    on_busybox: bool = False,
    user: str = "",
) -> PushedLayers:
    """Push an image whose layers are ``layers`` (above the busybox one if ``on_busybox``)."""
    sources = tmp_path / "image-layers"
    sources.mkdir(exist_ok=True)
    tars = tuple(sources / f"{name}-{index}.tar" for index in range(len(layers)))
    diff_ids = tuple(write_layer(tar, entries) for tar, entries in zip(tars, layers, strict=True))
    spec = images.ImageSpec(
        repository=f"kubehull/hostile-{name}", tag="1", cmd=("sh",), raw_layers=tars, busybox=on_busybox, user=user
    )
    return PushedLayers(reference=oci_registry.push(spec).reference, diff_ids=diff_ids)


def pull(hulld: Hulld, reference: str) -> str:
    answer = hulld.images().PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=reference)), timeout=120)
    return str(answer.image_ref)


def refused_pull(hulld: Hulld, reference: str) -> str:
    """Pull ``reference``, which must fail with FAILED_PRECONDITION; returns the error's details."""
    with pytest.raises(grpc.RpcError) as refused:
        pull(hulld, reference)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
    return str(refused.value.details())


def rpc_error(call: Callable[[], object]) -> grpc.RpcError | None:
    """The error ``call`` fails with, None if it succeeds."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    return None


def layer_dir(hulld: Hulld, diff_id: str) -> Path:
    return hulld.root / "images" / "layers" / diff_id.split(":")[1]


def assert_nothing_stored(hulld: Hulld, image: PushedLayers) -> None:
    listed = hulld.images().ListImages(cri.ListImagesRequest(), timeout=10).images
    assert all(image.reference not in listed_image.repo_tags for listed_image in listed)
    for diff_id in image.diff_ids:
        assert not layer_dir(hulld, diff_id).exists(), f"layer {diff_id} of a refused image was stored"
    assert list((hulld.root / "images" / "ingest").iterdir()) == []


def assert_still_serving(hulld: Hulld, reference: str) -> None:
    """hulld answers, and pulls an ordinary image (``reference``)."""
    assert hulld.runtime().Version(cri.VersionRequest(), timeout=10).runtime_name
    pull(hulld, reference)


def trusted_xattrs(root: Path) -> dict[str, list[str]]:
    """The trusted.* xattr names of every path below ``root`` (itself ".") that has any, read without following."""
    found: dict[str, list[str]] = {}
    paths = [root]
    for directory, subdirectories, files in os.walk(root):
        paths += [Path(directory, name) for name in (*subdirectories, *files)]
    for path in paths:
        names = sorted(name for name in os.listxattr(path, follow_symlinks=False) if name.startswith("trusted."))
        if names:
            found[str(path.relative_to(root))] = names
    return found


# --- layers reaching the host ---------------------------------------------------------------------------------


def assert_layer_refused_harmlessly(
    hulld: Hulld, oci_registry: OCIRegistry, tmp_path: Path, canaries: Canaries, name: str, layer: list[Entry]
) -> str:
    """Push an image of the one hostile ``layer``: its pull must fail, store nothing, leave the canaries as they
    were and hulld serving. Returns the refusal's message."""
    before = canaries.snapshots()
    image = push_layers(oci_registry, tmp_path, name, [layer])
    refusal = refused_pull(hulld, image.reference)
    assert_nothing_stored(hulld, image)
    canaries.assert_unchanged(before)
    assert_still_serving(hulld, oci_registry.images["busybox"].reference)
    return refusal


def test_hard_link_to_a_symlink_to_a_host_file(
    hulld: Hulld, oci_registry: OCIRegistry, tmp_path: Path, canaries: Canaries
) -> None:
    """The reported attack: the hard link's mode and owner were applied through the symlink, to the host file."""
    layer = [
        Entry("symlink", "evil-link", linkname=str(canaries.file)),
        Entry("hardlink", "setuid-hardlink", linkname="evil-link", mode=0o4777, uid=4321, gid=4321),
    ]
    refusal = assert_layer_refused_harmlessly(hulld, oci_registry, tmp_path, canaries, "hardlink-via-symlink", layer)
    assert "setuid-hardlink" in refusal


def test_whiteouts_under_a_symlink_to_a_host_directory(
    hulld: Hulld, oci_registry: OCIRegistry, tmp_path: Path, canaries: Canaries
) -> None:
    layer = [
        Entry("symlink", "shadow-dir", linkname=str(canaries.directory)),
        Entry("file", f"shadow-dir/{OPAQUE}"),
        Entry("file", f"shadow-dir/{WHITEOUT}inside"),
    ]
    refusal = assert_layer_refused_harmlessly(hulld, oci_registry, tmp_path, canaries, "whiteouts-via-symlink", layer)
    assert "shadow-dir" in refusal
    assert os.listxattr(canaries.directory, follow_symlinks=False) == []
    assert (canaries.directory / "inside").read_bytes() == canary.CONTENT


def test_file_under_a_symlink_to_a_host_directory(
    hulld: Hulld, oci_registry: OCIRegistry, tmp_path: Path, canaries: Canaries
) -> None:
    layer = [
        Entry("symlink", "escape-dir", linkname=str(canaries.directory)),
        Entry("file", "escape-dir/planted", mode=0o4755, content=b"#!/bin/sh\n"),
    ]
    refusal = assert_layer_refused_harmlessly(hulld, oci_registry, tmp_path, canaries, "file-via-symlink", layer)
    assert "escape-dir" in refusal
    assert not (canaries.directory / "planted").exists()


def test_forged_overlayfs_xattrs_never_reach_the_stored_layer(
    hulld: Hulld, oci_registry: OCIRegistry, tmp_path: Path, canaries: Canaries
) -> None:
    """An image must not steer overlayfs (redirects, opaque directories) with PAX xattrs; only hulld sets
    trusted.overlay.opaque, for an opaque whiteout. The pull may refuse the layer or skip those xattrs."""
    before = canaries.snapshots()
    forged = (("trusted.overlay.redirect", b"/etc"), ("trusted.overlay.opaque", b"y"))
    image = push_layers(
        oci_registry,
        tmp_path,
        "forged-xattrs",
        [
            [
                Entry("file", "forged-file", content=b"data", xattrs=(*forged, ("user.kept", b"yes"))),
                Entry("dir", "forged-dir", mode=0o755, xattrs=forged),
                Entry("dir", "really-opaque", mode=0o755),
                Entry("file", f"really-opaque/{OPAQUE}"),
            ]
        ],
    )
    refused = rpc_error(lambda: pull(hulld, image.reference))
    if refused is None:
        stored = layer_dir(hulld, image.diff_ids[0])
        assert trusted_xattrs(stored) == {"really-opaque": ["trusted.overlay.opaque"]}
        assert os.getxattr(stored / "forged-file", "user.kept", follow_symlinks=False) == b"yes"
    else:
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.details()
        assert_nothing_stored(hulld, image)
    canaries.assert_unchanged(before)
    assert_still_serving(hulld, oci_registry.images["busybox"].reference)


# --- bombs ----------------------------------------------------------------------------------------------------


def bomb_layers(bomb: str) -> list[list[Entry]]:
    """Layers just past one of IMAGE_LIMITS."""
    if bomb == "entries":
        return [[Entry("file", f"file-{number}") for number in range(51)]]
    if bomb == "bytes":  # 5 MiB of zeros: the compressed layer is a few kilobytes, well under the limit
        return [[Entry("file", "zeros", content=bytes(5 << 20))]]
    assert bomb == "layers"
    return [[Entry("file", f"layer-{number}")] for number in range(4)]


@pytest.mark.parametrize(
    ("bomb", "limit"), [("entries", "max_layer_entries"), ("bytes", "max_layer_bytes"), ("layers", "max_layers")]
)
def test_bombs_are_refused_by_the_image_limits(
    limited_hulld: Hulld, oci_registry: OCIRegistry, tmp_path: Path, canaries: Canaries, bomb: str, limit: str
) -> None:
    hulld = limited_hulld
    before = canaries.snapshots()
    image = push_layers(oci_registry, tmp_path, f"bomb-{bomb}", bomb_layers(bomb))
    assert limit in refused_pull(hulld, image.reference)
    assert_nothing_stored(hulld, image)
    canaries.assert_unchanged(before)
    # Right at every limit: as many layers and, in one of them, as many entries as allowed.
    at_the_limits = push_layers(
        oci_registry,
        tmp_path,
        "at-the-limits",
        [[Entry("file", f"file-{number}") for number in range(50)], [Entry("file", "two")], [Entry("file", "three")]],
    )
    assert_still_serving(hulld, at_the_limits.reference)


# --- the image's /etc/passwd ----------------------------------------------------------------------------------


def run_pod(hulld: Hulld, name: str) -> tuple[str, cri.PodSandboxConfig]:
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace="default", uid=f"uid-{name}", attempt=1),
        hostname=name,
        log_directory=str(hulld.pod_log_root / name),
        linux=cri.LinuxPodSandboxConfig(),
    )
    answer = hulld.runtime().RunPodSandbox(cri.RunPodSandboxRequest(config=config), timeout=120)
    return str(answer.pod_sandbox_id), config


def create_container(hulld: Hulld, pod: str, pod_config: cri.PodSandboxConfig, image: str) -> str:
    """CreateContainer, given 30 s: reading the image's /etc/passwd must not hang it."""
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="main"),
        image=cri.ImageSpec(image=image),
        command=["true"],
        log_path="main/0.log",  # as the kubelet names it: <container>/<attempt>.log
        linux=cri.LinuxContainerConfig(),
    )
    request = cri.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=pod_config)
    return str(hulld.runtime().CreateContainer(request, timeout=30).container_id)


def etc_passwd_layer(passwd: Entry) -> list[list[Entry]]:
    """A layer above busybox's replacing its /etc/passwd with ``passwd``."""
    return [[Entry("dir", "etc", mode=0o755), passwd]]


def test_passwd_symlink_to_a_host_file_is_not_read(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, canaries: Canaries
) -> None:
    hulld = hulld_with_network
    host_users = tmp_path / "host" / "passwd"
    host_users.write_text(HOST_USERS)
    before = canaries.snapshots()
    host_users_before = canary.snapshot(host_users)
    image = push_layers(
        oci_registry,
        tmp_path,
        "passwd-to-host",
        etc_passwd_layer(Entry("symlink", "etc/passwd", linkname=str(host_users))),
        on_busybox=True,
        user="canaryuser",
    )
    pull(hulld, image.reference)
    pod, pod_config = run_pod(hulld, "passwd-to-host")
    with pytest.raises(grpc.RpcError) as refused:
        create_container(hulld, pod, pod_config, image.reference)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
    assert "/etc/passwd" in refused.value.details()
    assert canary.snapshot(host_users) == host_users_before
    canaries.assert_unchanged(before)
    assert_still_serving(hulld, oci_registry.images["busybox"].reference)


@pytest.mark.parametrize(
    "passwd",
    [
        pytest.param(Entry("symlink", "etc/passwd", linkname="/dev/zero"), id="symlink-to-dev-zero"),
        pytest.param(Entry("char", "etc/passwd", mode=0o644, device=(1, 5)), id="char-device-1-5"),
    ],
)
def test_passwd_that_never_ends_does_not_hang_create_container(
    hulld_with_network: Hulld, oci_registry: OCIRegistry, tmp_path: Path, canaries: Canaries, passwd: Entry
) -> None:
    hulld = hulld_with_network
    before = canaries.snapshots()
    name = f"passwd-{passwd.kind}"
    image = push_layers(oci_registry, tmp_path, name, etc_passwd_layer(passwd), on_busybox=True, user="kubehull")
    pull(hulld, image.reference)
    pod, pod_config = run_pod(hulld, name)
    # Within the 30 s deadline, a container or the refusal of the image's content (the request itself is valid).
    error = rpc_error(lambda: create_container(hulld, pod, pod_config, image.reference))
    assert error is None or error.code() == grpc.StatusCode.FAILED_PRECONDITION, f"{error.code()}: {error.details()}"
    canaries.assert_unchanged(before)
    assert_still_serving(hulld, oci_registry.images["busybox"].reference)
