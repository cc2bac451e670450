"""hulld as a systemd unit on a host that runs systemd: installed, restarted when it dies, adopted, upgraded
and removed by the agent's installer.

This machine does not boot with systemd, so the test boots a real one: Debian's systemd as PID 1 of a
container (runc) whose root is an overlay of this machine's root. Inside it, the installer runs as it would on
such a host (a host process there, its own PID namespace included), with kubehull's real bundle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hulld.spec.container import KNOWN_CAPABILITIES
from kubehull_harness.waiting import wait_until
from tests.agent.conftest import bundle_of_version

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

# Capabilities systemd needs as PID 1 of the test host (CAP_SYS_RESOURCE is not ours to give on these VMs).
CAPABILITIES = [name for name in KNOWN_CAPABILITIES if name != "CAP_SYS_RESOURCE"]

# What the agent does at start (kubehull_agent/__main__.py), as one step on the systemd host; prints JSON.
STEP = """
import json, sys
from pathlib import Path
from kubehull_agent import install
from kubehull_agent.host import Host
bundle, root, config, action = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
installer = install.Installer(bundle, root, root / "install.lock")
supervisor = install.Supervisor(
    installer.current / "bin" / "hulld", config, Path("/run/hulld/hulld.sock"), Path("/run/hulld/hulld.pid"),
    Path("/var/log/kubehull/hulld.log"), Host(),
)
if action == "uninstall":
    install.uninstall(installer, supervisor)
    print(json.dumps({"systemd": supervisor.systemd}))
elif action == "status":
    print(json.dumps({"pid": supervisor.running_pid(), "version": supervisor.running_version()}))
else:
    installer.ensure()
    done = supervisor.ensure(install.bundle_version(bundle))
    print(json.dumps({"systemd": supervisor.systemd, "action": done, "pid": supervisor.running_pid(),
                      "version": supervisor.running_version()}))
"""


class SystemdHost:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.rootfs = work_dir / "rootfs"
        self.runc_root = work_dir / "runc"
        self.name = f"kubehull-systemd-{work_dir.name}"[:60]
        for directory in ("upper", "work", "rootfs", "bundle"):
            (work_dir / directory).mkdir()
        try:
            self._boot()
        except BaseException:
            self.destroy()
            raise

    def _boot(self) -> None:
        work_dir = self.work_dir
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir=/,upperdir={work_dir / 'upper'},workdir={work_dir / 'work'}",
                str(self.rootfs),
            ],
            check=True,
        )
        subprocess.run(["runc", "spec", "--bundle", str(work_dir / "bundle")], check=True)
        config_path = work_dir / "bundle" / "config.json"
        spec = json.loads(config_path.read_text())
        spec["root"] = {"path": str(self.rootfs), "readonly": False}
        spec["process"].update(
            args=["/lib/systemd/systemd"],
            terminal=False,
            noNewPrivileges=False,
            env=[*spec["process"]["env"], "container=kubehull-test"],
            capabilities={kind: CAPABILITIES for kind in ("bounding", "effective", "permitted")},
        )
        spec["mounts"] = [mount for mount in spec["mounts"] if mount["destination"] != "/sys/fs/cgroup"] + [
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["rw", "nosuid"]},
            # The overlay does not show everything of this machine's root (e.g. its /tmp): the interpreter
            # and the checkout (with its virtualenv) the installer steps run from come in read-only.
            *(
                {"destination": str(path), "type": "bind", "source": str(path), "options": ["rbind", "ro"]}
                for path in dict.fromkeys((Path(sys.base_prefix), REPO))
            ),
        ]
        for mount in spec["mounts"]:
            if mount["destination"] == "/sys":
                mount["options"] = [option for option in mount["options"] if option != "ro"]
        spec["linux"].update(maskedPaths=[], readonlyPaths=[])
        # A cgroup namespace of its own, as kind's nodes have: in this machine's, systemd would create the v1
        # hierarchies nobody mounts here (hugetlb, net_cls, perf_event), and a kind node booting meanwhile would
        # mount them too, without the kubelet's cgroup root its entrypoint made in the others.
        spec["linux"]["namespaces"].append({"type": "cgroup"})
        spec["linux"].pop("seccomp", None)
        config_path.write_text(json.dumps(spec))
        subprocess.run(
            ["runc", "--root", str(self.runc_root), "run", "--detach", "--bundle", str(work_dir / "bundle"), self.name],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=60,
        )
        state = subprocess.run(
            ["runc", "--root", str(self.runc_root), "state", self.name], capture_output=True, check=True
        ).stdout
        self.pid = int(json.loads(state)["pid"])

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``argv`` on the systemd host: in its mount, UTS, IPC, network and PID namespaces."""
        return subprocess.run(
            ["nsenter", f"--target={self.pid}", "--mount", "--uts", "--ipc", "--net", "--pid", "--", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def booted(self) -> bool:
        state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
        return state in ("running", "degraded")  # degraded: units for hardware this container lacks

    def unit(self, *properties: str) -> dict[str, str]:
        shown = self.run("systemctl", "show", "hulld.service", *(f"--property={name}" for name in properties))
        return dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)

    def provide(self, bundle: Path) -> Path:
        """A copy of ``bundle`` on the host (its /tmp is its own), as an agent image would bring it."""
        inside = Path("/srv/kubehull") / bundle.name
        shutil.copytree(bundle, self.rootfs / inside.relative_to("/"), symlinks=True)
        return inside

    def step(self, bundle: Path, action: str = "ensure") -> dict[str, Any]:
        result = self.run(
            sys.executable, "-c", STEP, str(bundle), "/opt/kubehull", "/etc/hulld/config.toml", action, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        found: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
        return found

    def destroy(self) -> None:
        subprocess.run(["runc", "--root", str(self.runc_root), "kill", self.name, "KILL"], capture_output=True)
        subprocess.run(["runc", "--root", str(self.runc_root), "delete", "--force", self.name], capture_output=True)
        subprocess.run(["umount", "--lazy", str(self.rootfs)], capture_output=True)


@pytest.fixture
def systemd_host(tmp_path: Path) -> Iterator[SystemdHost]:
    host = SystemdHost(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not host.booted():
            assert time.monotonic() < deadline, host.run("systemctl", "--failed", check=False).stdout
            time.sleep(0.5)
        yield host
    finally:
        host.destroy()


def test_hulld_runs_as_a_systemd_unit(systemd_host: SystemdHost, built_bundle: Path, tmp_path: Path) -> None:
    host = systemd_host
    host.run("mkdir", "-p", "/etc/hulld", "/etc/cni/net.d")
    config = f"""
[server]
metrics_address = ""
[storage]
root = "/var/lib/hulld"
[handlers.runc]
runtime_path = "{Path("/usr/sbin/runc").resolve()}"
"""
    (host.rootfs / "etc/hulld/config.toml").write_text(config)

    current = host.provide(built_bundle)
    first = host.step(current)
    assert first["systemd"] is True
    assert first["action"] == "started"
    assert first["version"] == "0.1.0"
    unit = host.unit("ActiveState", "UnitFileState", "MainPID", "KillMode", "FragmentPath", "Slice")
    assert unit["ActiveState"] == "active"
    assert unit["UnitFileState"] == "enabled"  # started again at boot
    assert unit["KillMode"] == "process"  # containers' monitors outlive a restart
    assert unit["FragmentPath"] == "/etc/systemd/system/hulld.service"
    assert unit["Slice"] == "kubehull.slice"  # a slice of its own
    assert int(unit["MainPID"]) == first["pid"]

    # hulld dies: systemd starts it again, without the agent.
    host.run("kill", "-9", str(first["pid"]))
    restarted = wait_until(
        lambda: (pid := int(host.unit("MainPID")["MainPID"])) not in (0, first["pid"]) and pid,
        30,
        "systemd to restart hulld",
    )
    wait_until(lambda: host.step(current, "status")["version"] == "0.1.0", 30, "the restarted hulld serving")
    again = host.step(current)
    assert again["action"] == "adopted"
    assert again["pid"] == restarted

    newer = host.provide(bundle_of_version(built_bundle, tmp_path / "kubehull-0.1.1", "0.1.1"))
    upgraded = host.step(newer)
    assert upgraded["action"] == "upgraded"
    assert upgraded["version"] == "0.1.1"
    assert host.unit("ActiveState")["ActiveState"] == "active"
    assert int(host.unit("MainPID")["MainPID"]) == upgraded["pid"]

    host.step(newer, "uninstall")
    assert not (host.rootfs / "etc/systemd/system/hulld.service").exists()
    assert host.unit("LoadState")["LoadState"] == "not-found"
    assert host.run("pgrep", "-f", "hulld --config", check=False).stdout == ""
    assert not (host.rootfs / "opt/kubehull/hulld").exists()
