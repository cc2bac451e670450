"""hulld's configuration: clear refusals, and SIGHUP reloads that keep the old config when the new is bad."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hulld import config
from tests.hulld.conftest import Hulld

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "hulld.toml"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[server]\nsocket = "relative.sock"', "server.socket must be an absolute path"),
        ('[handlers.gvisor]\nruntime_path = "/usr/bin/../../tmp/runsc"', "runtime_path must be an absolute path"),
        ('[handlers."Bad_Name"]\nruntime_path = "/usr/bin/runc"', "handlers.Bad_Name"),
        ('[runtime]\ndefault_handler = "kata"', "runtime.default_handler 'kata' is not among [handlers]"),
        ('[server]\nsokcet = "/run/x.sock"', "server.sokcet: Extra inputs are not permitted"),
        ('[server]\nprivate_socket = "/run/hulld/hulld.sock"', "private_socket must differ from server.socket"),
        ('[storage]\npod_log_root = "var/log/pods"', "storage.pod_log_root must be an absolute path"),
        ("[images]\nmax_layers = 0", "images.max_layers: Input should be greater than 0"),
        (
            '[handlers.runc]\nruntime_path = "/usr/bin/runc"\nconfig_path = "/etc/runc.toml"',
            "config_path has no meaning for an oci handler",
        ),
        ('[handlers.runc]\nruntime_path = "/usr/bin/runc"\noptions = {root = "/"}', "options.root is set by hulld"),
        (
            '[handlers.kata]\nruntime_type = "vm"\nruntime_path = "/usr/bin/containerd-shim-kata-v2"\n'
            'options = {debug = "true"}',
            "a vm handler's shim reads its config_path instead",
        ),
        (
            '[handlers.runc]\nruntime_path = "/usr/bin/runc"\noptions = {"log=/x --debug" = "1"}',
            "handlers.runc.options.log=/x --debug.[key]",
        ),
        ('[handlers.runc]\nruntime_path = "/usr/bin/runc"\noptions = {debug = "a\\nb"}', "handlers.runc.options.debug"),
        (
            '[handlers.runc]\nruntime_path = "/usr/bin/runc"\nallowed_annotations = ["a*b"]',
            "handlers.runc.allowed_annotations.0",
        ),
        (
            '[streaming]\ntls_cert_file = "/etc/hulld/stream.crt"',
            "tls_cert_file and streaming.tls_key_file go together",
        ),
        (
            '[streaming]\ntls_cert_file = "stream.crt"\ntls_key_file = "/etc/hulld/stream.key"',
            "streaming.tls_cert_file must be an absolute path",
        ),
        (
            '[handlers.runc]\nruntime_path = "/usr/bin/runc"\noptions = {systemdCgroup = "true"}',
            "options.systemdCgroup is set by hulld itself",
        ),
        ('[runtime]\ncgroup_driver = "cgroupv2"', "runtime.cgroup_driver: Input should be 'cgroupfs' or 'systemd'"),
        (
            '[handlers.shim]\nruntime_type = "vm"\nruntime_path = "/usr/bin/containerd-shim-runc-v2"\n'
            'config_path = "/etc/runc.toml"',
            "handlers.shim: Value error, config_path: containerd-shim-runc-v2 reads no configuration file",
        ),
        ("[server", "Expected ']'"),
        (f'[server]\nsocket = "/run/{"s" * 100}.sock"', "server.socket is too long: the unix socket"),
        (f'[server]\nprivate_socket = "/run/{"p" * 100}.sock"', "server.private_socket is too long"),
        (f'[storage]\nstate = "/{"s" * 73}"', "storage.state is too long"),
    ],
)
def test_invalid_config_is_refused_naming_the_field(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as refused:
        config.load(path)
    assert named in str(refused.value)
    started = subprocess.run(
        [sys.executable, "-m", "hulld", "--config", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert started.returncode == 2
    assert named in started.stderr


def test_the_longest_state_directory_is_accepted(tmp_path: Path) -> None:
    """74 bytes are refused (above); 73 leave the shims' event sockets beneath it their 107 bytes."""
    path = tmp_path / "config.toml"
    path.write_text(f'[storage]\nstate = "/{"s" * 72}"')
    state = config.load(path).storage.state
    assert len(str(config.shim_events_socket(state, "a-handler"))) == config.UNIX_SOCKET_PATH_MAX


def test_documented_example_is_valid() -> None:
    loaded = config.load(EXAMPLE)
    assert set(loaded.handlers) >= {"runc", "gvisor", "kata"}


@pytest.mark.registry
@pytest.mark.root
def test_sighup_reloads_and_a_bad_file_keeps_the_running_config(hulld: Hulld) -> None:
    def handlers() -> set[str]:
        info = json.loads(hulld.crictl("info").stdout)
        return {handler.get("name", "") for handler in info["runtimeHandlers"]}

    configured = {"", "runc", "runsc", "shim-runc", "shim-runc-2-4", "shim-runsc"}
    assert handlers() == configured
    good = hulld.config_path.read_text() + '\n[handlers.crun]\nruntime_path = "/usr/bin/crun"\n'
    hulld.config_path.write_text(good)
    assert hulld.process is not None
    hulld.process.popen.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while handlers() != configured | {"crun"}:
        assert time.monotonic() < deadline, hulld.log
        time.sleep(0.1)

    hulld.config_path.write_text(good.replace('default_handler = "runc"', 'default_handler = "missing"'))
    hulld.process.popen.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reload refused" not in hulld.log:
        assert time.monotonic() < deadline, hulld.log
        time.sleep(0.1)
    assert "runtime.default_handler 'missing'" in hulld.log
    assert handlers() == configured | {"crun"}
