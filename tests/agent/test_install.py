"""hulld on the host from the agent's bundle: install, start, adopt, upgrade under running containers,
refuse a second instance, uninstall only when no pod runs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubehull_agent import install
from kubehull_agent.host import Host
from kubehull_harness import mounts, toolchain
from kubehull_harness.pytest_plugin import OCIRegistry
from tests.agent.conftest import bundle_of_version
from tests.hulld.conftest import CNI_CONFLIST

pytestmark = [pytest.mark.registry, pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    mounts.unmount_under(tmp_path)


def test_install_adopt_upgrade_and_uninstall(host: Path, built_bundle: Path, oci_registry: OCIRegistry) -> None:
    (host / "cni").mkdir()
    (host / "cni" / "10-test.conflist").write_text(CNI_CONFLIST)
    config = host / "hulld.toml"
    config.write_text(f"""
[server]
socket = "{host}/run/hulld.sock"
metrics_address = ""
[storage]
root = "{host}/root"
state = "{host}/state"
pod_log_root = "{host}/logs"
[network]
cni_conf_dir = "{host}/cni"
cni_bin_dirs = ["/usr/lib/cni"]
[[registries]]
prefix = "127.0.0.1"
insecure = true
[handlers.runc]
runtime_path = "/usr/sbin/runc"
""")
    installer = install.Installer(built_bundle, host / "opt", host / "install.lock")
    assert installer.ensure() is True
    assert installer.ensure() is False  # already there: not copied again
    assert (host / "opt" / "hulld").resolve() == host / "opt" / "hulld-0.1.0"
    supervisor = install.Supervisor(
        installer.current / "bin" / "hulld",
        config,
        host / "run" / "hulld.sock",
        host / "state" / "hulld.pid",
        host / "hulld.log",
        Host(),
        systemd=False,  # the detached process (tests/agent/test_systemd.py covers the unit)
    )
    try:
        assert supervisor.ensure("0.1.0") == "started"
        first = supervisor.running_pid()
        assert first is not None
        assert b"/opt/hulld" in Path(f"/proc/{first}/cmdline").read_bytes()
        assert supervisor.ensure("0.1.0") == "adopted"
        assert supervisor.running_pid() == first

        second = subprocess.run(
            [str(installer.current / "bin" / "hulld"), "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 3
        assert "another hulld is running" in second.stderr

        def crictl(*args: str) -> str:
            endpoint = f"unix://{host}/run/hulld.sock"
            return subprocess.run(
                [
                    str(toolchain.binary("crictl")),
                    f"--runtime-endpoint={endpoint}",
                    f"--image-endpoint={endpoint}",
                    "--timeout=60s",  # crictl's own default (2 s) is too short on a loaded machine
                    *args,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.strip()

        image = oci_registry.images["busybox"].reference
        crictl("pull", image)
        pod_file = host / "pod.json"
        pod_file.write_text(
            json.dumps(
                {
                    "metadata": {"name": "survivor", "namespace": "t", "uid": "s"},
                    "log_directory": str(host / "logs" / "survivor"),
                }
            )
        )
        container_file = host / "container.json"
        container_file.write_text(
            json.dumps(
                {
                    "metadata": {"name": "main"},
                    "image": {"image": image},
                    "command": ["sleep", "3600"],
                    "log_path": "main.log",
                }
            )
        )
        pod = crictl("runp", str(pod_file))
        container = crictl("create", pod, str(container_file), str(pod_file))
        crictl("start", container)

        newer = bundle_of_version(built_bundle, host / "bundle-0.1.1", "0.1.1")
        upgrader = install.Installer(newer, host / "opt", host / "install.lock")
        assert upgrader.ensure() is True
        assert supervisor.ensure("0.1.1") == "upgraded"
        assert supervisor.running_pid() not in (None, first)
        assert supervisor.running_version() == "0.1.1"
        assert json.loads(crictl("inspect", container))["status"]["state"] == "CONTAINER_RUNNING"
        assert crictl("exec", "-s", container, "echo", "undisturbed") == "undisturbed"

        with pytest.raises(install.InstallError, match="still runs 1 pods"):
            install.uninstall(upgrader, supervisor)
        crictl("rmp", "-f", pod)
        install.uninstall(upgrader, supervisor)
        assert supervisor.running_pid() is None
        assert sorted(path.name for path in (host / "opt").iterdir() if not path.name.startswith(".")) == []
    finally:  # whatever failed, leave no pod and no hulld behind
        endpoint = f"unix://{host}/run/hulld.sock"
        subprocess.run(
            [str(toolchain.binary("crictl")), f"--runtime-endpoint={endpoint}", "rmp", "-a", "-f"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        pid = supervisor.running_pid()
        if pid is not None:
            supervisor.stop(pid)
