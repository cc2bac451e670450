"""The OCI spec of a pod's infra container: pure, from the pod's sandbox record.

A pod gets one when it needs a process of its own: its containers share one PID namespace (the infra's shell
is their PID 1, reaping orphans), or its runtime runs the whole pod in one sandbox (gVisor: the infra is the
sandbox, and each container joins it by the annotations containerd's CRI plugin uses). It runs a static
busybox's shell from a read-only root filesystem that holds nothing else, with no capabilities, as nobody.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hulld.spec import seccomp
from hulld.spec.container import CONTAINER_TYPE, MASKED_PATHS, READONLY_PATHS, SANDBOX_ID
from hulld.store.records import SandboxRecord

NOBODY = 65534
PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do /bin/busybox sleep 86400 & wait $!; done"
"""Waits forever; ``wait`` reaps every child, orphans of the pod's containers included. Its child is named
``busybox``, not ``sleep``: the pod's containers see it, and a ``pgrep sleep`` of theirs must not."""


def build(sandbox: SandboxRecord, infra_id: str, rootfs: Path) -> dict[str, Any]:
    namespaces: list[dict[str, Any]] = [{"type": "mount"}]
    if not sandbox.host_pid:
        namespaces.append({"type": "pid"})
    for kind, oci in (("net", "network"), ("ipc", "ipc"), ("uts", "uts")):
        if kind in sandbox.status.namespaces:
            namespaces.append({"type": oci, "path": sandbox.status.namespaces[kind]})
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": NOBODY, "gid": NOBODY},
            "args": ["/bin/sh", "-c", PAUSE_SCRIPT],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=64k"]},
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "annotations": {CONTAINER_TYPE: "sandbox", SANDBOX_ID: infra_id},
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": sandbox.cgroup.oci_path(infra_id),
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "sysctl": dict(sandbox.sysctls),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp.load(seccomp.RUNTIME_DEFAULT, []),
        },
    }
    if "uts" in sandbox.status.namespaces:
        spec["hostname"] = sandbox.hostname
    return spec
