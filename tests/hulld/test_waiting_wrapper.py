"""The start FIFO between hulld and a sandbox runtime's waiting wrapper (runtimes/oci.py), with a real FIFO.

The wrapper opens the FIFO for reading in the background after ``create`` returned. A stop that comes before
that (CI saw it under load: critest's "preserving container attributes" stops its pod right after creating a
container) found no reader, released nothing, and the wrapper, once it opened the FIFO, waited for a start
forever: "did not exit after SIGKILL". Here the reader comes late on purpose."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from hulld.runtimes import oci
from hulld.runtimes.base import ContainerPaths


def bundle(tmp_path: Path) -> ContainerPaths:
    paths = ContainerPaths(bundle=tmp_path, log=None, exits=tmp_path / "exits", persist=tmp_path / "persist")
    paths.exits.mkdir()
    os.mkfifo(tmp_path / oci.START_REQUEST, 0o600)
    return paths


def test_a_waiter_that_opens_its_fifo_late_is_still_released(tmp_path: Path) -> None:
    paths = bundle(tmp_path)
    read: list[str] = []

    def late_waiter() -> None:
        time.sleep(0.5)  # the background subshell not there yet
        with (tmp_path / oci.START_REQUEST).open() as fifo:  # as `read -r _ <fifo`: waits for a writer
            read.append(fifo.read())

    waiter = threading.Thread(target=late_waiter, daemon=True)
    waiter.start()
    oci.OCIHandler._release_waiter("c0ffee", paths)
    waiter.join(5)
    assert read == [""]  # end of file, no start request: the wrapper exits as "deleted without a start"


def test_a_waiter_already_gone_is_not_waited_for(tmp_path: Path) -> None:
    paths = bundle(tmp_path)
    (paths.exits / "c0ffee").write_text("255")  # conmon's record of the wrapper's exit
    started = time.monotonic()
    oci.OCIHandler._release_waiter("c0ffee", paths)
    assert time.monotonic() - started < 1  # not WAITER_READY_TIMEOUT
