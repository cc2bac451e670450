"""The handler table: one ``Handler`` per configured runtime handler, of the class its ``runtime_type`` names.

A new kind of runtime is one more entry in ``RUNTIME_TYPES`` (and in ``HandlerConfig.runtime_type``); nothing
that uses handlers branches on a type or a name.
"""

from __future__ import annotations

from hulld import errors
from hulld.config import Config, HandlerConfig
from hulld.node.cgroups.layout import Driver
from hulld.runtimes.base import Handler
from hulld.runtimes.oci import OCIHandler
from hulld.runtimes.shim.handler import ShimHandler

RUNTIME_TYPES: dict[str, type[Handler]] = {"oci": OCIHandler, "vm": ShimHandler}


class Handlers:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._table: dict[str, tuple[tuple[HandlerConfig, Driver], Handler]] = {}
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Make the handlers ``config`` names; one whose configuration did not change is kept as it is (a shim
        handler keeps its connections), the others are closed."""
        table: dict[str, tuple[tuple[HandlerConfig, Driver], Handler]] = {}
        for name, handler_config in config.handlers.items():
            key = (handler_config, config.runtime.cgroup_driver)
            kept = self._table.get(name)
            if kept is not None and kept[0] == key:
                table[name] = kept
            else:
                kind = RUNTIME_TYPES[handler_config.runtime_type]
                table[name] = (key, kind(name, handler_config, config.storage, config.runtime.cgroup_driver))
        for name, (_, handler) in self._table.items():
            if table.get(name, (None, None))[1] is not handler:
                handler.close()
        self.config, self._table = config, table

    def close(self) -> None:
        for _, handler in self._table.values():
            handler.close()

    def get(self, name: str) -> Handler:
        """The handler ``name``, for a new pod or an existing one."""
        entry = self._table.get(name)
        if entry is not None:
            return entry[1]
        raise errors.FailedPrecondition(f"runtime handler {name} is no longer configured on this node")

    def find(self, name: str) -> Handler | None:
        """The handler ``name`` if it can run anything, for clean-ups that go on without it."""
        entry = self._table.get(name)
        return entry[1] if entry is not None else None
