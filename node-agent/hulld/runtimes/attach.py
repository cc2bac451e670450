"""A client attached to a container's own stdio through its conmon (the OCI handlers' CRI Attach).

conmon (started with ``--socket-dir-path``) listens on ``<socket dir>/<container>/attach``, a SOCK_SEQPACKET
socket, for any number of clients. Each message it sends is one byte naming the stream (2: stdout, 3: stderr;
a terminal's output is all stdout) and the data; what a client sends is the container's input (conmon was
started with ``--stdin``), and a client's end of input (our ``shutdown(SHUT_WR)``) ends the container's input
too unless conmon was told ``--leave-stdin-open`` (the CRI's stdin without stdin_once). Terminal sizes go to
conmon's control FIFO in the bundle (``1 <height> <width>``). Output and input are moved to and from pipes by
two threads, so the streaming session reads and writes descriptors as it does for an exec.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

from hulld import errors
from hulld.runtimes.base import StdioSession

STDOUT, STDERR = 2, 3
MESSAGE_SIZE = 8192 + 1
"""conmon's stdio buffer and the stream byte."""
INPUT_CHUNK = 8192
"""Input goes in messages conmon reads whole (its buffer is larger)."""
RESIZE_EVENT = 1


class ConmonAttach(StdioSession):
    def __init__(self, socket_dir: Path, control: Path, *, stdin: bool, tty: bool) -> None:
        self._control = control
        # The socket's path can be longer than a socket address holds: reach it through our descriptor of its
        # directory, as conmon binds it.
        directory = os.open(socket_dir, os.O_PATH | os.O_CLOEXEC)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._socket.connect(f"/proc/self/fd/{directory}/attach")
        except OSError as error:
            self._socket.close()
            raise errors.FailedPrecondition(f"attaching to the container's monitor: {error}") from error
        finally:
            os.close(directory)
        self.stdout, self._stdout_end = os.pipe()
        self.stderr: int | None = None
        self._stderr_end: int | None = None
        if not tty:
            self.stderr, self._stderr_end = os.pipe()
        self.stdin = None
        if stdin:
            input_end, self.stdin = os.pipe()
            threading.Thread(target=self._send_input, args=(input_end,), name="attach input", daemon=True).start()
        self._output = threading.Thread(target=self._receive_output, name="attach output", daemon=True)
        self._output.start()

    def _receive_output(self) -> None:
        ends = {STDOUT: self._stdout_end, STDERR: self._stderr_end if self._stderr_end is not None else -1}
        try:
            while message := self._socket.recv(MESSAGE_SIZE):
                end = ends.get(message[0], -1)
                data = memoryview(message)[1:]
                while end >= 0 and data:
                    data = data[os.write(end, data) :]
        except OSError:
            pass  # detached (kill), or the reader of a pipe is gone
        finally:
            os.close(self._stdout_end)
            if self._stderr_end is not None:
                os.close(self._stderr_end)

    def _send_input(self, input_end: int) -> None:
        try:
            while data := os.read(input_end, INPUT_CHUNK):
                self._socket.sendall(data)
            self._socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # detached
        finally:
            os.close(input_end)

    def wait(self) -> int:
        self._output.join()
        return 0

    def resize(self, width: int, height: int) -> None:
        descriptor = os.open(self._control, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.write(descriptor, f"{RESIZE_EVENT} {height} {width}\n".encode())
        finally:
            os.close(descriptor)

    def end_input(self) -> None:
        if self.stdin is not None:
            os.close(self.stdin)  # the input thread sees the end and passes it on
            self.stdin = None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.kill()
        self._output.join()
        self._close_descriptors()
        self._socket.close()
