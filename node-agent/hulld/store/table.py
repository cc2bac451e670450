"""One kind of record in memory (by ID, unique by name, found by ID prefix) and on disk.

    <directory>/<file name of its id>.json     one record, replaced atomically on every change

Only a record's status ever changes (``update``, ``set``): under the table's lock, on the record as it is
at that moment, never bringing back a removed one. Loading skips (and reports) files it cannot read instead of
failing the whole start-up.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from hulld import errors
from hulld.atomic import write_atomically
from hulld.store.records import Record

logger = logging.getLogger(__name__)
R = TypeVar("R", bound=Record[Any])


class Table(Generic[R]):
    def __init__(self, directory: Path, kind: type[R], file_name: Callable[[str], str] = lambda id: id) -> None:
        self.directory = directory
        self.kind = kind
        self._file_name = file_name
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()
        self._records: dict[str, R] = {}
        self.unreadable: list[Path] = []
        for path in sorted(directory.glob("*.json")):
            try:
                record = kind.from_json(path.read_text())
            except (OSError, ValueError, TypeError, KeyError) as error:
                logger.error("skipping unreadable record %s: %s", path, error)
                self.unreadable.append(path)
                continue
            self._records[record.id] = record

    @property
    def _noun(self) -> str:
        return self.kind.__name__.removesuffix("Record").lower()

    def _path(self, record_id: str) -> Path:
        return self.directory / f"{self._file_name(record_id)}.json"

    def add(self, record: R) -> R:
        with self._lock:
            clash = next((other for other in self._records.values() if other.unique_name == record.unique_name), None)
            if clash is not None:
                raise errors.AlreadyExists(f"{record.unique_name!r} is already in use by {clash.id}")
            write_atomically(self._path(record.id), record.to_json())
            self._records[record.id] = record
            return record

    def get(self, identifier: str, keep: Callable[[R], bool] = lambda record: True) -> R:
        """By full ID or a unique ID prefix, among the records ``keep`` selects (a client's own)."""
        with self._lock:
            exact = self._records.get(identifier)
            if exact is not None and keep(exact):
                return exact
            matches = [
                record
                for key, record in self._records.items()
                if identifier and key.startswith(identifier) and keep(record)
            ]
            if len(matches) == 1:
                return matches[0]
        if len(matches) > 1:
            raise errors.InvalidArgument(f"{self._noun} ID prefix {identifier!r} is ambiguous")
        raise errors.NotFound(f"{self._noun} {identifier!r} not found")

    def find(self, identifier: str, keep: Callable[[R], bool] = lambda record: True) -> R | None:
        try:
            return self.get(identifier, keep)
        except errors.NotFound:
            return None

    def update(self, record_id: str, change: Callable[[Any], Any]) -> tuple[R, R]:
        """Apply ``change`` to the record's status as it is now, under the table's lock, and store the status it
        returns; returns the record (before, after). ``change`` returning its argument changes nothing. A record
        removed meanwhile is ``NotFound``: an update never brings it back."""
        with self._lock:
            before = self._records.get(record_id)
            if before is None:
                raise errors.NotFound(f"{self._noun} {record_id!r} not found")
            status = change(before.status)
            if status is before.status:
                return before, before
            after = dataclasses.replace(before, status=status)
            write_atomically(self._path(record_id), after.to_json())
            self._records[record_id] = after
            return before, after

    def set(self, record_id: str, **fields: Any) -> R:
        """Set status ``fields`` on the record as it is now (never on a caller's older copy)."""
        return self.update(record_id, lambda status: dataclasses.replace(status, **fields))[1]

    def remove(self, record: R) -> None:
        with self._lock:
            self._path(record.id).unlink(missing_ok=True)
            self._records.pop(record.id, None)

    def list(self, keep: Callable[[R], bool] = lambda record: True) -> list[R]:
        with self._lock:
            return [record for record in self._records.values() if keep(record)]
