"""The operator's copy of the kinds that come by the thousand (Nodes, NodeRuntimes), kept outside kopf.

kopf holds back every handler until each object of each indexed kind has been indexed, and it does that with one
toggle per object on one shared condition: every object's worker is woken for every other object's toggle, so
the wait grows with the square of the objects (measured: 113 s before the first pass with 5000 Nodes). And each
watch event goes through kopf's per-object machinery (a diff base, handler arguments, a logger), most of the
operator's time when a profile change brings 15 000 of them. So kopf indexes only the few (profiles,
RuntimeClasses, namespaces, admission objects), and these kinds are listed and watched by the controller's own
``reflector`` into a ``Mirror``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

R = TypeVar("R")


class Mirror(Generic[R]):
    """Records of one kind's objects by name, as the last list and the watch events since made them; written only
    from the event loop's thread (the reflector hands its reads over), read by the controller's snapshot."""

    def __init__(self) -> None:
        self._records: dict[str, R] = {}
        self.listed = False
        """Whether a list has filled it: before that it may miss any object."""

    def replace(self, records: dict[str, R]) -> None:
        """A list's result: exactly these objects, whatever came before (an object deleted while no watch was
        open is dropped here, and nowhere else)."""
        self._records = records
        self.listed = True

    def put(self, name: str, record: R | None) -> None:
        """A watch event: the object as it now is, or None if it is gone (or left out: it does not parse)."""
        if record is None:
            self._records.pop(name, None)
        else:
            self._records[name] = record

    # The shape of a kopf index (name → a collection of records), so the snapshot reads both alike.

    def __getitem__(self, name: str) -> tuple[R]:
        return (self._records[name],)

    def items(self) -> list[tuple[str, tuple[R]]]:
        return [(name, (record,)) for name, record in self._records.items()]
