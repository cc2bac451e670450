"""Pulls from registries that demand credentials: Basic (htpasswd) and Bearer tokens (the Docker token
protocol), with the credentials of CRI's AuthConfig."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2 as cri

from kubehull_harness import images, registry_auth
from tests.hulld.conftest import Hulld

pytestmark = [pytest.mark.registry, pytest.mark.root]

USER, PASSWORD = "kube", "hull-secret"


@pytest.fixture(scope="module", params=["basic", "token"])
def locked_registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, component_logs: Path
) -> Iterator[tuple[registry_auth.AuthRegistry, str]]:
    work = tmp_path_factory.mktemp(f"registry-{request.param}")
    start = registry_auth.start_basic if request.param == "basic" else registry_auth.start_token
    served = start(work / "registry", component_logs, USER, PASSWORD)
    try:
        spec = images.TEST_IMAGES["busybox"]
        source = images.build(spec, work / "layout", work)
        pushed = images.push(source, spec, served.served, work, credentials=f"{USER}:{PASSWORD}")
        yield served, pushed.reference
    finally:
        served.stop()


def pull(hulld: Hulld, reference: str, **auth: str) -> str:
    request = cri.PullImageRequest(image=cri.ImageSpec(image=reference), auth=cri.AuthConfig(**auth))
    return str(hulld.images().PullImage(request).image_ref)


def test_pull_needs_the_right_credentials(
    hulld: Hulld, locked_registry: tuple[registry_auth.AuthRegistry, str]
) -> None:
    _, reference = locked_registry
    with pytest.raises(grpc.RpcError) as anonymous:
        pull(hulld, reference)
    assert anonymous.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as wrong:
        pull(hulld, reference, username=USER, password="wrong")
    assert wrong.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE)
    image_id = pull(hulld, reference, username=USER, password=PASSWORD)
    assert image_id.startswith("sha256:")
    # crictl's --creds, which the kubelet's pull secrets become: AuthConfig.auth is base64 "user:password".
    hulld.crictl("rmi", reference)
    assert "Image is up to date" in hulld.crictl("pull", "--creds", f"{USER}:{PASSWORD}", reference).stdout
