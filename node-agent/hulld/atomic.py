"""Files written so that a crash at any moment leaves the old content or the new, never a torn mix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, and rename it over ``path``."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as temporary:
        temporary.write(text)
        temporary.flush()
        os.fsync(temporary.fileno())
    os.replace(temporary.name, path)
