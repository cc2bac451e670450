"""Build kubehull's container image (operator, node agent and the hulld bundle) without pulling a base image.

    python node-agent/image/build.py OCI_LAYOUT [--tag TAG]      # writes the image to the layout as TAG
    skopeo copy oci:OCI_LAYOUT:TAG docker://REGISTRY/kubehull/kubehull:TAG

The root filesystem is assembled from the building machine: kubehull's bundle (``kubehull_agent.bundle``) at
/usr/lib/kubehull, the shared libraries its interpreter and extension modules link against (found with ``ldd``,
from the machine's Debian packages), and Debian's busybox-static for a shell and ``true`` (the command the
agent's probes run). No Dockerfile: nothing here needs a base image or a daemon. Needs umoci; run it from the
environment kubehull is installed in (``.venv/bin/python``). docs/image.md explains the result.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import hulld
from kubehull_agent import bundle

BUNDLE = Path("usr/lib/kubehull")
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: one static binary, no libraries
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NON_ROOT = 65532  # the operator's user (charts/kubehull: runAsUser)
DLOPENED = ("libgcc_s.so.1",)
LIBRARY_DIRS = (Path("/lib/x86_64-linux-gnu"), Path("/usr/lib/x86_64-linux-gnu"))


def assemble(rootfs: Path) -> None:
    system = bundle.build(rootfs / BUNDLE)  # the bundle carries every library but the C library's own
    # Loaded by glibc at run time rather than linked, so ldd cannot name it: thread cancellation needs it.
    system.update(directory / name for directory in LIBRARY_DIRS for name in DLOPENED if (directory / name).exists())
    for library in sorted(system):
        target = rootfs / library.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library.resolve(), target)
    for command in bundle.COMMANDS:
        link = rootfs / "usr/bin" / command
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../lib/kubehull/bin") / command)
    (rootfs / "bin").mkdir(exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        link = rootfs / applet
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/bin/sh\nkubehull:x:{NON_ROOT}:{NON_ROOT}::/nonexistent:/bin/false\n"
    )
    (etc / "group").write_text(f"root:x:0:\nkubehull:x:{NON_ROOT}:\n")
    for directory in ("proc", "sys", "dev", "run", "root", "var/log"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp").chmod(0o1777)


def _owned_by_root(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


def build(layout: Path, tag: str, work_dir: Path) -> str:
    """Write the image into the OCI layout ``layout`` as ``tag``; returns the reference ``oci:<layout>:<tag>``."""
    rootfs = work_dir / "rootfs"
    rootfs.mkdir()
    assemble(rootfs)
    layer = work_dir / "layer.tar"
    # tarfile, not `umoci insert`: umoci leaves the last entry unpadded, which strict readers refuse.
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as archive:
        for entry in sorted(rootfs.iterdir()):
            archive.add(entry, arcname=entry.name, filter=_owned_by_root)
    if not (layout / "index.json").exists():
        subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    image = f"{layout}:{tag}"
    subprocess.run(["umoci", "new", "--image", image], check=True)
    subprocess.run(["umoci", "raw", "add-layer", "--image", image, str(layer)], check=True)
    subprocess.run(
        [
            "umoci",
            "config",
            "--image",
            image,
            "--os=linux",
            "--architecture=amd64",
            f"--config.env=PATH={PATH}",
            "--config.workingdir=/",
            "--config.cmd=kubehull-agent",
            "--config.cmd=--help",
            f"--config.label=org.opencontainers.image.version={tag}",
            "--config.label=org.opencontainers.image.title=kubehull",
            f"--config.label=io.kubehull.hulld-bundle=/{BUNDLE}",
        ],
        check=True,
    )
    return f"oci:{image}"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python node-agent/image/build.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("layout", type=Path, help="OCI image layout directory (created if missing)")
    parser.add_argument("--tag", default=hulld.__version__, help="image tag (default: kubehull's version)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubehull-image-") as work_dir:
        print(build(args.layout, args.tag, Path(work_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
