"""The options a shim's Create carries, picked by the shim as containerd's CRI picks them by runtime type.

- containerd's runc shim (``containerd-shim-runc-v2``) takes runc's options (``containerd.runc.v1.Options``):
  hulld sets ``systemd_cgroup`` from ``runtime.cgroup_driver``, so runc asks systemd for each container's scope.
- Every other shim takes ``runtimeoptions.v1.Options``: the path of its own configuration file, if the handler
  names one. Kata's shim tells the systemd driver from the cgroups path's form (``slice:prefix:name``); gVisor's
  shim needs ``runsc_config.systemd-cgroup = "true"`` in its file, so under that driver it gets a copy of the
  handler's file with it added (a file that says otherwise is refused, naming the setting).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from google.protobuf import any_pb2
from google.protobuf.message import Message

from hulld import errors
from hulld.atomic import write_atomically
from hulld.config import RUNC_SHIM
from hulld.node.cgroups.layout import Driver
from hulld.runtimes.shim.protocol import task_pb2

RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options"
RUNTIME_OPTIONS_TYPE = "runtimeoptions.v1.Options"
GVISOR_SHIM = "containerd-shim-runsc-v1"
GVISOR_SYSTEMD_FLAG = "systemd-cgroup"


class CreateOptions:
    """What ``handlers.<name>`` (its shim, its config_path) and the cgroup driver make of a Create's options."""

    def __init__(self, name: str, shim: Path, config_path: Path | None, driver: Driver, state: Path) -> None:
        self.name = name
        self.shim = shim
        self.config_path = config_path
        self.driver = driver
        self.derived_config = state / "runsc-shim.toml"
        """gVisor's shim's file under the systemd driver: the handler's, with the driver's flag added."""

    def value(self) -> any_pb2.Any | None:
        if self.shim.name == RUNC_SHIM:
            return _packed(RUNC_OPTIONS_TYPE, task_pb2.RuncOptions(systemd_cgroup=self.driver == "systemd"))
        path = self._gvisor_config() if self.shim.name == GVISOR_SHIM else self.config_path
        if path is None:
            return None
        return _packed(RUNTIME_OPTIONS_TYPE, task_pb2.RuntimeOptions(config_path=str(path)))

    def _gvisor_config(self) -> Path | None:
        """The file gVisor's shim reads: the handler's own, checked to agree with the driver (runsc would read
        the other driver's cgroups paths wrongly), or under systemd a copy with the flag set."""
        table = self._read_config()
        wanted = "true" if self.driver == "systemd" else "false"
        runsc_config = table.setdefault("runsc_config", {})
        said = runsc_config.get(GVISOR_SYSTEMD_FLAG)
        if said is not None and str(said).lower() != wanted:
            raise errors.FailedPrecondition(
                f"handlers.{self.name}.config_path: {self.config_path} sets runsc_config.{GVISOR_SYSTEMD_FLAG} ="
                f" {said!r}, but runtime.cgroup_driver is {self.driver}"
            )
        if self.driver != "systemd":
            return self.config_path
        runsc_config[GVISOR_SYSTEMD_FLAG] = "true"
        text = tomli_w.dumps(table)
        try:
            unchanged = self.derived_config.read_text() == text
        except FileNotFoundError:
            unchanged = False
        if not unchanged:
            write_atomically(self.derived_config, text)
        return self.derived_config

    def _read_config(self) -> dict[str, Any]:
        if self.config_path is None:
            return {}
        try:
            table = tomllib.loads(self.config_path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise errors.FailedPrecondition(
                f"handlers.{self.name}.config_path: cannot read {self.config_path}: {error}"
            ) from error
        if not isinstance(table.get("runsc_config", {}), dict):
            raise errors.FailedPrecondition(
                f"handlers.{self.name}.config_path: runsc_config in {self.config_path} is not a table"
            )
        return table


def _packed(type_url: str, message: Message) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=message.SerializeToString())
