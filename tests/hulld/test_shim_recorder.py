"""The shim event recorder's start: hulld waits for it to serve, and one that cannot serve is reported as soon
as it exits, with its log, not after the start timeout (which is long: emulated machines start Python slowly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hulld import errors
from hulld.runtimes.shim import handler


def test_a_recorder_that_cannot_serve_is_reported_when_it_exits(tmp_path: Path) -> None:
    address = tmp_path / "no-such-directory" / "events.sock"  # its bind fails
    log = tmp_path / "recorder.log"
    with pytest.raises(errors.Unavailable, match=r"exited with code 1 before serving at .*events\.sock; see "):
        handler._ensure_recorder(address, tmp_path / "spool", log)
    assert "FileNotFoundError" in log.read_text()


def test_a_started_recorder_serves_and_is_found_again(tmp_path: Path) -> None:
    address = tmp_path / "events.sock"
    log = tmp_path / "recorder.log"
    handler._ensure_recorder(address, tmp_path / "spool", log)
    try:
        assert address.is_socket()
        served_by = address.stat().st_ino
        handler._ensure_recorder(address, tmp_path / "spool", log)  # answers already: no second recorder
        assert address.stat().st_ino == served_by
    finally:
        address.unlink()  # the recorder ends once its address is gone
