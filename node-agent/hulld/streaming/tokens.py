"""Single-use, short-lived tokens naming one prepared streaming request (as the kubelet's streaming library).

A CRI Exec/Attach/PortForward call stores what was asked and returns a URL with a token; the client's
connection to that URL takes the request out again. The URL is the only credential the streaming server
checks, so a token is unguessable (128 random bits), usable once, and gone after a minute.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Generic, TypeVar

from hulld import errors

T = TypeVar("T")
LIFETIME = 60.0
CAPACITY = 1000


class TokenCache(Generic[T]):
    def __init__(self, lifetime: float = LIFETIME, capacity: int = CAPACITY) -> None:
        self.lifetime = lifetime
        self.capacity = capacity
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, T]] = {}

    def issue(self, request: T) -> str:
        now = time.monotonic()
        with self._lock:
            self._entries = {token: entry for token, entry in self._entries.items() if entry[0] > now}
            if len(self._entries) >= self.capacity:
                raise errors.ResourceExhausted(
                    f"{self.capacity} streaming requests are waiting for their client; try again shortly"
                )
            token = secrets.token_urlsafe(16)
            self._entries[token] = (now + self.lifetime, request)
            return token

    def take(self, token: str) -> T | None:
        """The request the token names, once; None if it is unknown, used or expired."""
        with self._lock:
            entry = self._entries.pop(token, None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]
