"""The oci_registry fixture serves real OCI images, built here, that real runc runs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubehull_harness.pytest_plugin import OCIRegistry

pytestmark = pytest.mark.registry

MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"


def fetch(url: str, accept: str = "*/*") -> tuple[bytes, str]:
    """The body and Content-Type of a GET."""
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310 - loopback registry
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.read(), response.headers["Content-Type"]


def fetch_verified(registry: OCIRegistry, repository: str, kind: str, digest: str, accept: str = "*/*") -> bytes:
    body, content_type = fetch(f"http://{registry.host}/v2/{repository}/{kind}/{digest}", accept)
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    if kind == "manifests":
        assert content_type == "application/vnd.oci.image.manifest.v1+json"
    return body


def test_manifest_config_and_layer_are_pulled_by_digest(oci_registry: OCIRegistry) -> None:
    image = oci_registry.images["busybox"]
    manifest: dict[str, Any] = json.loads(
        fetch_verified(oci_registry, image.repository, "manifests", image.digest, MANIFEST_TYPES)
    )
    assert manifest["schemaVersion"] == 2
    config = json.loads(fetch_verified(oci_registry, image.repository, "blobs", manifest["config"]["digest"]))
    assert config["config"]["Cmd"] == ["sh"]
    assert config["os"] == "linux"
    assert config["architecture"] == "amd64"
    assert len(manifest["layers"]) == 1
    layer = manifest["layers"][0]
    blob = fetch_verified(oci_registry, image.repository, "blobs", layer["digest"])
    assert len(blob) == layer["size"]


def test_critest_images_file_names_pushed_images(oci_registry: OCIRegistry) -> None:
    listed = yaml.safe_load(oci_registry.critest_images_file.read_text())
    assert listed == {
        "defaultTestContainerImage": oci_registry.images["busybox"].reference,
        "webServerTestImage": oci_registry.images["webserver"].reference,
    }
    for reference in listed.values():
        host, rest = reference.split("/", 1)
        repository, tag = rest.rsplit(":", 1)
        assert host == oci_registry.host
        fetch(f"http://{host}/v2/{repository}/manifests/{tag}", MANIFEST_TYPES)


def run_image_with_runc(registry: OCIRegistry, key: str, args: list[str], work_dir: Path) -> str:
    """Copy the image by digest out of the registry, unpack it into a bundle and `runc run` it."""
    image = registry.images[key]
    layout = work_dir / "layout"
    policy = work_dir / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    subprocess.run(
        [
            "skopeo",
            "--policy",
            str(policy),
            "copy",
            "--src-tls-verify=false",
            f"docker://{image.by_digest}",
            f"oci:{layout}:pulled",
        ],
        check=True,
        capture_output=True,
    )
    bundle = work_dir / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:pulled", str(bundle)], check=True, capture_output=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    (bundle / "config.json").write_text(json.dumps(spec))
    name = f"kubehull-smoke-{key}-{work_dir.name}"[:60]
    try:
        result = subprocess.run(
            ["runc", "run", "--bundle", str(bundle), name], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.root
def test_busybox_image_has_a_shell_and_every_applet(oci_registry: OCIRegistry, tmp_path: Path) -> None:
    script = 'id -un; n=0; for a in $(busybox --list-full); do [ -x "/$a" ] && n=$((n+1)) || echo "missing $a"; done;'
    script += " echo $n"
    output = run_image_with_runc(oci_registry, "busybox", ["/bin/sh", "-c", script], tmp_path)
    applets = subprocess.run(["busybox", "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    assert output.split() == ["root", str(len(applets))]


@pytest.mark.root
def test_webserver_image_serves_http_on_port_80(oci_registry: OCIRegistry, tmp_path: Path) -> None:
    output = run_image_with_runc(
        oci_registry,
        "webserver",
        ["/bin/sh", "-c", "httpd -p 80 -h /www && sleep 0.5 && wget -qO- http://127.0.0.1:80/"],
        tmp_path,
    )
    assert "kubehull test web server" in output
