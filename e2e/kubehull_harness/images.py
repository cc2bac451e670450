"""Test images built locally from Debian's busybox-static with umoci, pushed to the local registry with skopeo.

No base image can be pulled here, so every image the tests run is made from scratch: a root filesystem holding
the static busybox binary and a link for each of its applets, a small /etc, and an image config (cmd, env,
ports). The layer is written with Python's tarfile (umoci's own `insert` leaves the last entry unpadded, which
strict readers reject) and added with `umoci raw add-layer`, as are the hand-made layer tars of the security
tests (``raw_layers``, with or without the busybox layer). The images are real OCI images; the registry serves
them like any other.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from kubehull_harness import processes
from kubehull_harness.registry import Registry

BUSYBOX = Path("/bin/busybox")  # from the busybox-static package
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Debian's static busybox has no pgrep applet; critest's specs use `pgrep NAME`.
PGREP = """#!/bin/sh
# pgrep NAME: the PIDs of the processes whose command name is NAME.
found=1
for entry in /proc/[0-9]*; do
    if [ "$(cat "$entry/comm" 2>/dev/null)" = "$1" ]; then
        echo "${entry#/proc/}"
        found=0
    fi
done
exit $found
"""

# /etc/passwd and /etc/group of the test images: root, a plain user (1000) with a supplementary group, nobody.
USERS_FILE = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
kubehull:x:1000:1000:kubehull test user:/home/kubehull:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUPS_FILE = """\
root:x:0:
daemon:x:1:
kubehull:x:1000:
www-data:x:33:
extra:x:2000:kubehull
nogroup:x:65534:
"""


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """A layer on top of the busybox one: files to add, paths to delete (whiteouts), directories to replace."""

    files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    deleted: tuple[str, ...] = ()
    opaque: tuple[str, ...] = ()
    """Directories whose lower content this layer hides (``.wh..wh..opq``)."""


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    repository: str
    tag: str
    cmd: tuple[str, ...]
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    entrypoint: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
    layers: tuple[LayerSpec, ...] = ()
    user: str = ""
    working_dir: str = ""
    raw_layers: tuple[Path, ...] = ()
    """Layer tars added as they are, above ``layers`` (hand-made ones, e.g. hostile layers for security tests)."""
    busybox: bool = True
    """False: no busybox layer at the bottom (nor ``files``, which go into it); the image is its other layers."""


@dataclasses.dataclass(frozen=True)
class PushedImage:
    reference: str
    """``host/repository:tag``"""
    digest: str
    """The manifest digest, ``sha256:...``"""
    repository: str

    @property
    def by_digest(self) -> str:
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"


TEST_IMAGES: dict[str, ImageSpec] = {
    "busybox": ImageSpec(repository="kubehull/busybox", tag="1.35", cmd=("sh",)),
    # critest's webServerTestImage: something answering HTTP on port 80.
    # Three layers, the upper ones deleting and hiding what the lower ones added: whiteouts and opaque dirs.
    "layered": ImageSpec(
        repository="kubehull/layered",
        tag="1.0",
        cmd=("sh",),
        layers=(
            LayerSpec(files={"data/keep": "kept\n", "data/gone": "deleted above\n", "cache/old": "hidden above\n"}),
            LayerSpec(files={"cache/new": "the only file in cache\n"}, deleted=("data/gone",), opaque=("cache",)),
        ),
    ),
    "webserver": ImageSpec(
        repository="kubehull/webserver",
        tag="1.0",
        # Says "httpd" on start, as the upstream image does (critest looks for it in the log).
        cmd=("sh", "-c", "echo httpd: serving /www on port 80; exec httpd -f -v -p 80 -h /www"),
        files={"www/index.html": "<html><body>kubehull test web server</body></html>\n"},
        exposed_ports=("80/tcp",),
    ),
}


def _busybox_rootfs(rootfs: Path, files: Mapping[str, str]) -> None:
    if not BUSYBOX.is_file():
        raise processes.ProcessError(f"{BUSYBOX} is missing (Debian package busybox-static)")
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home/kubehull", "proc", "sys", "dev"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").mkdir(mode=0o1777, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    applets = processes.run([BUSYBOX, "--list-full"]).stdout.split()
    for applet in applets:  # e.g. "bin/sh", "usr/bin/wc"
        link = rootfs / applet
        if applet != "bin/busybox" and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    if not (rootfs / "usr/bin/pgrep").exists():
        (rootfs / "usr/bin/pgrep").write_text(PGREP)
        (rootfs / "usr/bin/pgrep").chmod(0o755)
    (rootfs / "etc/passwd").write_text(USERS_FILE)
    (rootfs / "etc/group").write_text(GROUPS_FILE)
    os.chown(rootfs / "home/kubehull", 1000, 1000)
    for relative, content in files.items():
        target = rootfs / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)


def _add_layer(image: str, tar: Path, content: Path) -> None:
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as archive:
        for entry in sorted(content.iterdir()):
            archive.add(entry, arcname=entry.name)
    processes.run(["umoci", "raw", "add-layer", "--image", image, tar])
    tar.unlink()


def build(spec: ImageSpec, layout: Path, work_dir: Path) -> str:
    """Build ``spec`` into the OCI layout ``layout``; returns the layout reference (``oci:<dir>:<tag>``)."""
    name = spec.repository.rsplit("/", 1)[-1]
    tag = f"{name}-{spec.tag}"
    if not layout.exists():
        processes.run(["umoci", "init", "--layout", layout])
    image = f"{layout}:{tag}"
    processes.run(["umoci", "new", "--image", image])
    if spec.busybox:
        rootfs = work_dir / f"{tag}-rootfs"
        if rootfs.exists():
            shutil.rmtree(rootfs)
        rootfs.mkdir(parents=True)
        _busybox_rootfs(rootfs, spec.files)
        _add_layer(image, work_dir / f"{tag}-layer.tar", rootfs)
        shutil.rmtree(rootfs)
    for index, extra in enumerate(spec.layers):
        upper = work_dir / f"{tag}-layer{index}"
        if upper.exists():
            shutil.rmtree(upper)
        for relative, content in extra.files.items():
            (upper / relative).parent.mkdir(parents=True, exist_ok=True)
            (upper / relative).write_text(content)
        for relative in extra.deleted:  # the OCI whiteout: an empty ".wh.<name>" beside it
            target = upper / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            (target.parent / f".wh.{target.name}").write_text("")
        for relative in extra.opaque:
            (upper / relative).mkdir(parents=True, exist_ok=True)
            (upper / relative / ".wh..wh..opq").write_text("")
        _add_layer(image, work_dir / f"{tag}-layer{index}.tar", upper)
        shutil.rmtree(upper)
    for raw in spec.raw_layers:
        processes.run(["umoci", "raw", "add-layer", "--image", image, raw])
    config = [
        "--config.env",
        PATH_ENV,
        "--config.workingdir",
        "/",
        "--os",
        "linux",
        "--architecture",
        "amd64",
    ]
    for arg in spec.entrypoint:
        config += ["--config.entrypoint", arg]
    for arg in spec.cmd:
        config += ["--config.cmd", arg]
    for port in spec.exposed_ports:
        config += ["--config.exposedports", port]
    if spec.user:
        config += ["--config.user", spec.user]
    if spec.working_dir:
        config += ["--config.workingdir", spec.working_dir]
    processes.run(["umoci", "config", "--image", image, *config])
    return f"oci:{image}"


def _skopeo(*args: processes.Arg, policy: Path) -> str:
    return processes.run(["skopeo", "--policy", policy, *args]).stdout


def push(
    source: str, spec: ImageSpec, registry: Registry, work_dir: Path, *options: str, credentials: str | None = None
) -> PushedImage:
    """Copy ``source`` to the registry as ``spec``'s repository and tag (``credentials``: "user:password")."""
    # Our own images, on our own loopback registry: no signatures to demand.
    policy = work_dir / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    reference = registry.reference(spec.repository, spec.tag)
    login = [f"--dest-creds={credentials}"] if credentials else []
    _skopeo("copy", "--dest-tls-verify=false", *login, *options, source, f"docker://{reference}", policy=policy)
    login = [f"--creds={credentials}"] if credentials else []
    digest = _skopeo(
        "inspect", "--tls-verify=false", *login, "--format", "{{.Digest}}", f"docker://{reference}", policy=policy
    ).strip()
    return PushedImage(reference=reference, digest=digest, repository=spec.repository)


def preload(registry: Registry, work_dir: Path) -> dict[str, PushedImage]:
    """Build every test image and push it to ``registry``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    layout = work_dir / "layout"
    return {key: push(build(spec, layout, work_dir), spec, registry, work_dir) for key, spec in TEST_IMAGES.items()}


# The images critest's [Conformance] specs pull by name, re-created here under the same repository paths, so
# that a runtime configured with this registry as its mirror for gcr.io, registry.k8s.io and k8s.gcr.io finds
# them (critest's own --registry-prefix drops their tags). Names listed together are one image under several
# tags. The one spec that pulls a fixed upstream digest cannot be served by any locally built image.
CRITEST_MIRRORED = ("gcr.io", "registry.k8s.io", "k8s.gcr.io")
CRITEST_STAGING = "k8s-staging-cri-tools"


def critest_mirrors(registry_host: str) -> str:
    """hulld's ``[[registries]]`` entries that make the local registry the mirror of critest's upstreams."""
    return "".join(
        f'\n[[registries]]\nprefix = "{upstream}"\ninsecure = true\nmirrors = ["{registry_host}"]\n'
        for upstream in CRITEST_MIRRORED
    )


CRITEST_IMAGES: tuple[tuple[ImageSpec, tuple[str, ...]], ...] = (
    (ImageSpec(repository=f"{CRITEST_STAGING}/test-image-latest", tag="latest", cmd=("sh",)), ()),
    (ImageSpec(repository=f"{CRITEST_STAGING}/test-image-tag", tag="test", cmd=("sh",)), ("all",)),
    (ImageSpec(repository=f"{CRITEST_STAGING}/test-image-tags", tag="1", cmd=("sh",)), ("2", "3")),
    *(
        (
            ImageSpec(
                repository=f"{CRITEST_STAGING}/test-image-{n}",
                tag="latest",
                cmd=("sh",),
                files={"etc/test-image": f"{n}\n"},
            ),
            (),
        )
        for n in (1, 2, 3)
    ),
    (ImageSpec(repository=f"{CRITEST_STAGING}/test-image-user-uid", tag="latest", cmd=("sh",), user="1002"), ()),
    (
        ImageSpec(repository=f"{CRITEST_STAGING}/test-image-user-username", tag="latest", cmd=("sh",), user="www-data"),
        (),
    ),
    (
        ImageSpec(repository=f"{CRITEST_STAGING}/test-image-user-uid-group", tag="latest", cmd=("sh",), user="1003:33"),
        (),
    ),
    (
        ImageSpec(
            repository=f"{CRITEST_STAGING}/test-image-user-username-group",
            tag="latest",
            cmd=("sh",),
            user="www-data:www-data",
        ),
        (),
    ),
    (dataclasses.replace(TEST_IMAGES["webserver"], repository="e2e-test-images/httpd", tag="2.4.39-4"), ()),
    (dataclasses.replace(TEST_IMAGES["busybox"], repository="e2e-test-images/busybox", tag="1.29-2"), ()),
    (ImageSpec(repository="pause", tag="3.9", cmd=("sleep", "2147483647")), ()),
)


def preload_critest(registry: Registry, work_dir: Path) -> None:
    """Push every image critest's conformance specs name (see CRITEST_IMAGES)."""
    layout = work_dir / "critest-layout"
    for spec, extra_tags in CRITEST_IMAGES:
        source = build(spec, layout, work_dir)
        push(source, spec, registry, work_dir)
        for tag in extra_tags:
            push(source, dataclasses.replace(spec, tag=tag), registry, work_dir)


def write_critest_images_file(path: Path, images: Mapping[str, PushedImage]) -> None:
    """critest's ``--test-images-file``: the images its specs run, pointing at the local registry."""
    path.write_text(
        yaml.safe_dump(
            {
                "defaultTestContainerImage": images["busybox"].reference,
                "webServerTestImage": images["webserver"].reference,
            }
        )
    )
