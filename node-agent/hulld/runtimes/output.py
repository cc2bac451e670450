"""An ExecSync's output, read to its end but kept only up to a limit: a container's command decides how much
it writes, and hulld holds it all in memory to send in one gRPC message.

Each stream keeps at most ``EXEC_SYNC_OUTPUT_LIMIT`` bytes and drains the rest (a writer that blocked on a
full pipe would never exit). The limit is half the kubelet's 16 MiB CRI message limit, so that stdout and
stderr together still reach it; containerd keeps 16 MiB of each, which the kubelet then cannot receive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading

logger = logging.getLogger(__name__)

EXEC_SYNC_OUTPUT_LIMIT = 8 * 1024 * 1024
READ_SIZE = 65536


class CappedOutput:
    """Reads each named descriptor to its end in a thread of its own; ``result`` gives what it kept."""

    def __init__(self, descriptors: dict[str, int], limit: int = EXEC_SYNC_OUTPUT_LIMIT) -> None:
        self.limit = limit
        self._descriptors = descriptors
        self._data = {name: bytearray() for name in descriptors}
        self._dropped = dict.fromkeys(descriptors, 0)
        self._threads = [
            threading.Thread(target=self._read, args=(name,), name=f"exec {name}", daemon=True) for name in descriptors
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, name: str) -> None:
        descriptor, kept = self._descriptors[name], self._data[name]
        poller = select.poll()
        poller.register(descriptor, select.POLLIN)
        while True:
            poller.poll()
            try:
                chunk = os.read(descriptor, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not chunk:
                return
            room = self.limit - len(kept)
            kept += chunk[:room] if room > 0 else b""
            self._dropped[name] += max(0, len(chunk) - max(room, 0))

    def result(self, timeout: float = 10.0) -> dict[str, bytes]:
        """What each stream kept, once it ended (or ``timeout`` passed: a descendant may still hold it open)."""
        for thread in self._threads:
            thread.join(timeout)
        for name, dropped in self._dropped.items():
            if dropped:
                logger.warning("ExecSync %s: kept the first %d bytes, dropped %d more", name, self.limit, dropped)
        return {name: bytes(data) for name, data in self._data.items()}

    def close(self) -> None:
        for descriptor in self._descriptors.values():
            with contextlib.suppress(OSError):
                os.close(descriptor)
