"""hulld's configuration as the agent renders it from a NodeRuntime spec."""

from __future__ import annotations

import tomllib
from typing import Any

from kubehull_agent import render
from kubehull_api.noderuntime import HandlerConfig

BASE: dict[str, dict[str, Any]] = {
    "server": {"socket": "/run/hulld/hulld.sock"},
    "runtime": {"default_handler": "runc"},
    "handlers": {"runc": {"runtime_path": "/usr/bin/runc"}},
}


def handler(name: str, path: str, **extra: object) -> HandlerConfig:
    return HandlerConfig.model_validate(
        {
            "name": name,
            "profile": name,
            "profileGeneration": 1,
            "engine": "gvisor",
            "runtimeType": "oci",
            "path": path,
            **extra,
        }
    )


def test_handlers_are_rendered_on_top_of_the_base() -> None:
    text = render.render(BASE, [handler("gvisor", "/usr/bin/runsc", options={"platform": "systrap"})], {}, {})
    config = tomllib.loads(text)
    assert config["server"] == BASE["server"]
    assert config["handlers"]["runc"] == {"runtime_path": "/usr/bin/runc"}
    assert config["handlers"]["gvisor"] == {
        "runtime_type": "oci",
        "runtime_path": "/usr/bin/runsc",
        "options": {"platform": "systrap"},
        "sandbox_per_pod": True,  # gVisor runs a pod's containers in one sandbox
    }


def test_only_gvisor_handlers_run_a_sandbox_per_pod() -> None:
    text = render.render(BASE, [handler("fast", "/usr/bin/crun", engine="crun")], {}, {})
    assert "sandbox_per_pod" not in tomllib.loads(text)["handlers"]["fast"]


def test_a_handler_that_fails_its_checks_keeps_what_hulld_runs() -> None:
    running = {"gvisor": {"runtime_type": "oci", "runtime_path": "/usr/bin/runsc"}}
    broken = handler("gvisor", "/nonexistent/runsc")
    kept = tomllib.loads(render.render(BASE, [broken], {"gvisor": "missing"}, running))
    assert kept["handlers"]["gvisor"] == running["gvisor"]
    fresh = tomllib.loads(render.render(BASE, [broken], {"gvisor": "missing"}, {}))
    assert "gvisor" not in fresh["handlers"]  # never ran: not rendered at all


def driver(base: dict[str, Any], running: dict[str, Any] | None, host_runs_systemd: bool) -> str:
    return str(render.with_cgroup_driver(base, running, host_runs_systemd)["runtime"]["cgroup_driver"])


def test_the_cgroup_driver_never_changes_under_a_running_node() -> None:
    # A first configuration follows the host's init.
    assert driver(BASE, None, host_runs_systemd=True) == "systemd"
    assert driver(BASE, None, host_runs_systemd=False) == "cgroupfs"
    # hulld already runs: its driver stays (cgroupfs, hulld's default, when its file names none).
    assert driver(BASE, {"runtime": {"cgroup_driver": "systemd"}}, host_runs_systemd=False) == "systemd"
    assert driver(BASE, {"runtime": {}}, host_runs_systemd=True) == "cgroupfs"
    # The node image's base decides over both.
    named = {**BASE, "runtime": {"default_handler": "runc", "cgroup_driver": "cgroupfs"}}
    assert driver(named, {"runtime": {"cgroup_driver": "systemd"}}, host_runs_systemd=True) == "cgroupfs"
    assert "cgroup_driver" not in BASE["runtime"]  # the base itself is left as it was
