"""The handler table: one ``Handler`` per configured runtime handler, of the class its ``runtime_type`` names.

A new kind of runtime is one more entry in ``RUNTIME_TYPES``; nothing that uses handlers branches on a type or
a name. A configured handler whose type has no implementation yet answers UNIMPLEMENTED, saying so.
"""

from __future__ import annotations

from hulld import errors
from hulld.config import Config
from hulld.runtimes.base import Handler
from hulld.runtimes.oci import OCIHandler

RUNTIME_TYPES: dict[str, type[Handler]] = {"oci": OCIHandler}


class Handlers:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._table: dict[str, Handler] = {
            name: RUNTIME_TYPES[handler.runtime_type](name, handler, config.storage.state)
            for name, handler in config.handlers.items()
            if handler.runtime_type in RUNTIME_TYPES
        }

    def get(self, name: str) -> Handler:
        """The handler ``name``, for a new pod or an existing one."""
        handler = self._table.get(name)
        if handler is not None:
            return handler
        if name in self.config.handlers:
            kind = self.config.handlers[name].runtime_type
            raise errors.Unimplemented(f"runtime handler {name}: runtime_type {kind!r} is not supported yet")
        raise errors.FailedPrecondition(f"runtime handler {name} is no longer configured on this node")

    def find(self, name: str) -> Handler | None:
        """The handler ``name`` if it can run anything, for clean-ups that go on without it."""
        return self._table.get(name)
