"""RuntimeService methods hulld does not serve (yet): each answers UNIMPLEMENTED saying so and why
(docs/hulld.md lists them)."""

from __future__ import annotations

from typing import Any

from hulld import errors


class UnsupportedMethods:
    def CheckpointContainer(self, request: Any, context: Any) -> Any:  # noqa: N802 - the CRI's method names
        raise errors.Unimplemented("CheckpointContainer: hulld does not support container checkpoints")
