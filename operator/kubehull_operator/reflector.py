"""List, then watch, one kind into a ``Mirror``: how the controller keeps its copy of Nodes and NodeRuntimes.

As client-go's reflector does: list every object, a page at a time, and *replace* the mirror with the result;
watch from the list's resourceVersion, with bookmarks so that a quiet kind's version stays recent; when the API
server ends a watch (after a random 5 to 10 minutes, so that watches do not all end at once), or the connection
breaks, watch again from the last version seen; when the API server answers 410 Gone (that version is older
than its watch cache: it restarted, or the operator was disconnected long), list again. Replacing, not merging,
is what drops an object deleted while no watch was open, a deletion no event will ever report.

The kubernetes client blocks, so each reflector runs in a thread of its own; it parses what it reads there and
hands the records to the event loop in batches, where the mirror is written and the controller nudged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from kubernetes.client.exceptions import ApiException

from kubehull_operator.kube import Kube
from kubehull_operator.mirror import Mirror

logger = logging.getLogger(__name__)

R = TypeVar("R")
WATCH_SECONDS = (300, 600)  # client-go's: a watch lasts a random 5 to 10 minutes
BACKOFF_SECONDS = (1.0, 30.0)  # after a failed list or watch: the first wait, the longest


class ExpiredError(Exception):
    """410 Gone: the resourceVersion is no longer in the API server's watch cache; only a new list helps."""


class Reflector(Generic[R]):
    def __init__(
        self,
        kube: Kube,
        plural: str,
        parse: Callable[[Mapping[str, Any]], R],
        mirror: Mirror[R],
        loop: asyncio.AbstractEventLoop,
        changed: Callable[[], None],
    ) -> None:
        """``parse`` makes a record of an object (ValueError: it is left out, and logged); ``changed`` is called
        on the loop after each batch reaches ``mirror``."""
        self.kube = kube
        self.plural = plural
        self._parse = parse
        self._mirror = mirror
        self._loop = loop
        self._changed = changed
        self.version: str | None = None
        """The resourceVersion to watch from: the last list's, then each event's (None: list first)."""
        self._lock = threading.Lock()
        self._pending: list[tuple[str, R | None] | dict[str, R]] = []  # watch events, and whole lists

    def run(self, stopping: threading.Event) -> None:
        """List and watch until ``stopping`` is set (checked between events: a silent watch ends within its
        timeout)."""
        failures = 0
        while not stopping.is_set():
            try:
                if self.version is None:
                    self.version = self._list()
                started = time.monotonic()
                if not self._watch(self.version, stopping) and time.monotonic() - started < 1:
                    # as client-go: a watch that ends at once with nothing to say is a failure, not a loop
                    raise RuntimeError("the watch ended at once without an event")
                failures = 0
            except ExpiredError as error:
                logger.info("%s: %s; listing again", self.plural, error)
                self.version = None
            except Exception as error:  # the API server is away, or restarting: try again, more slowly each time
                failures += 1
                first, longest = BACKOFF_SECONDS
                delay = min(longest, first * 2 ** (failures - 1)) * random.uniform(1.0, 1.5)  # noqa: S311
                logger.warning("%s: %s; again in %.1f s", self.plural, str(error) or type(error).__name__, delay)
                stopping.wait(delay)

    def _list(self) -> str:
        records: dict[str, R] = {}
        version = ""
        for page in self.kube.list_pages(self.plural):
            for item in page.get("items") or []:
                name, record = self._record(item)
                if record is not None:
                    records[name] = record
            version = str(page["metadata"]["resourceVersion"])
        self._hand_over(records)
        logger.info("%s: listed %d", self.plural, len(records))
        return version

    def _watch(self, version: str, stopping: threading.Event) -> int:
        """Hand over the events of a watch from ``version`` until the API server ends it, advancing
        ``self.version`` with each (so that a watch that breaks resumes where it broke); how many events came."""
        events = self.kube.watch(self.plural, version, random.randint(*WATCH_SECONDS))  # noqa: S311
        count = 0
        try:
            with contextlib.closing(events):
                for event in events:
                    count += 1
                    kind, body = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if body.get("code") == 410:
                            raise ExpiredError(body.get("message") or "410 Gone")
                        raise RuntimeError(f"watch error {body.get('code')}: {body.get('message')}")
                    if kind == "DELETED":
                        self._hand_over((body["metadata"]["name"], None))
                    elif kind in ("ADDED", "MODIFIED"):
                        self._hand_over(self._record(body))
                    self.version = str(body["metadata"]["resourceVersion"])  # bookmarks too
                    if stopping.is_set():
                        break
        except ApiException as error:
            if error.status == 410:
                raise ExpiredError(error.reason) from error
            raise
        return count

    def _record(self, body: Mapping[str, Any]) -> tuple[str, R | None]:
        name = str(body["metadata"]["name"])
        try:
            return name, self._parse(body)
        except ValueError as error:
            logger.error("%s: left out %s: it does not parse: %s", self.plural, name, error)
            return name, None

    def _hand_over(self, change: tuple[str, R | None] | dict[str, R]) -> None:
        """Queue a change for the loop; the first of a batch schedules the loop's turn."""
        with self._lock:
            self._pending.append(change)
            if len(self._pending) > 1:
                return
        self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for change in batch:
            if isinstance(change, dict):
                self._mirror.replace(change)
            else:
                self._mirror.put(*change)
        self._changed()
