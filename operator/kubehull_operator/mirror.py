"""The operator's copy of the kinds that come by the thousand (Nodes, NodeRuntimes), kept outside kopf's indices.

kopf holds back every handler until each object of each indexed kind has been indexed, and it does that with one
toggle per object on one shared condition: every object's worker is woken for every other object's toggle, so
the wait grows with the square of the objects (measured: 113 s before the first pass with 5000 Nodes). So kopf
indexes only the few (profiles, RuntimeClasses, namespaces, admission objects), and these kinds come through
plain event handlers into a ``Mirror``. Whether a mirror holds the whole kind is told by the names a list of
the kind returned (``expect``): once the watch has shown each of them, the mirror is complete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

R = TypeVar("R")


class Mirror(Generic[R]):
    """Objects of one kind by name, parsed as ``parse`` makes them, as the watch last showed them."""

    def __init__(self, parse: Callable[[Mapping[str, Any]], R]) -> None:
        self._parse = parse
        self._records: dict[str, R] = {}
        # Until complete: the names the watch has shown, and those a list returned (None: not listed yet).
        self._seen: set[str] | None = set()
        self._expected: set[str] | None = None

    def apply(self, event_type: str | None, name: str, body: Mapping[str, Any]) -> None:
        """One watch event (``None``: an object the watch's initial list returned). An object that does not
        parse is left out (and logged), but counts as shown: it must not hold the operator back for good."""
        if self._seen is not None:
            self._seen.add(name)
        if event_type == "DELETED":
            self._records.pop(name, None)
            return
        try:
            self._records[name] = self._parse(body)
        except ValueError as error:
            self._records.pop(name, None)
            logger.error("left out %s: it does not parse: %s", name, error)

    def expect(self, names: Iterable[str]) -> None:
        """The names a list of the kind returned: the mirror is complete once the watch has shown each one. (An
        object deleted before the watch listed it is never shown: list again and expect anew.)"""
        if self._seen is not None:
            self._expected = set(names)

    def complete(self) -> bool:
        if self._seen is None:
            return True
        if self._expected is None or not self._expected <= self._seen:
            return False
        self._seen = self._expected = None  # for good: from here on the watch keeps it current
        return True

    @property
    def missing(self) -> int:
        """How many listed objects the watch has not shown yet."""
        return 0 if self._seen is None or self._expected is None else len(self._expected - self._seen)

    # The shape of a kopf index (name → a collection of records), so the snapshot reads both alike.

    def __getitem__(self, name: str) -> tuple[R]:
        return (self._records[name],)

    def items(self) -> list[tuple[str, tuple[R]]]:
        return [(name, (record,)) for name, record in self._records.items()]
