"""The event recorder: the ttrpc server shims publish their events to, outliving hulld.

    python -m hulld.runtimes.shim.recorder SOCKET SPOOL

A shim publishes each event (an exit, an OOM kill) with a call to ``Events/Forward`` at ``TTRPC_ADDRESS``, and
gVisor's shim panics, killing every container of its pod, when that call fails while an address is set. So
the server must answer while hulld restarts: this small process does, in its own session, started by hulld
when it finds none (``ShimHandler``). It answers every request with success and writes the request (a ttrpc
``Request`` holding a ``ForwardRequest``) into SPOOL, one file each, named so that they sort in arrival order;
hulld reads and removes them. It ends when its address is removed or taken over. It needs nothing but the
standard library and ``framing``.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
import threading
import time
from pathlib import Path

from hulld.runtimes.shim.framing import REQUEST, RESPONSE, frame, read_frame

STILL_THERE_EVERY = 5.0
"""Seconds between checks that the recorder's address is still its own."""


class Recorder:
    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self._sequence = itertools.count()
        self._lock = threading.Lock()

    def record(self, request: bytes) -> None:
        with self._lock:
            name = f"{time.time_ns():020d}-{next(self._sequence):09d}"
        staged = self.spool / f".{name}"
        staged.write_bytes(request)
        staged.rename(self.spool / name)  # hulld never sees half an event

    def serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                while True:
                    stream, kind, data = read_frame(connection)
                    if kind != REQUEST:
                        continue  # Forward is unary: no data frames
                    self.record(data)
                    connection.sendall(frame(stream, RESPONSE, b""))  # an empty Response: status OK
            except (OSError, ConnectionError):
                return


def main(argv: list[str]) -> int:
    address, spool = Path(argv[0]), Path(argv[1])
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    recorder = Recorder(spool)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staged = address.with_name(f".{os.getpid()}")  # short: a socket's path has 107 bytes at most
    staged.unlink(missing_ok=True)
    listener.bind(str(staged))
    staged.chmod(0o600)
    listener.listen(128)
    staged.rename(address)  # the address answers from the moment it exists
    inode = address.stat().st_ino
    listener.settimeout(STILL_THERE_EVERY)
    while True:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            try:
                if address.stat().st_ino == inode:
                    continue
            except FileNotFoundError:
                pass
            return 0  # its address was removed or taken over (hulld uninstalled, its state directory gone)
        connection.settimeout(None)
        threading.Thread(target=recorder.serve, args=(connection,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
