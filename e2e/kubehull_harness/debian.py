"""Root filesystems from Debian's packages (``mmdebstrap``), for the test VM's disk and kind's node images."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from kubehull_harness import processes

SUITE = "bookworm"
"""Debian 12: its systemd (252) still boots on a cgroup v1 host, as kind's nodes on this machine must."""


def bootstrap(target: Path, packages: Sequence[str], log: Path, *, variant: str, hooks: Sequence[str] = ()) -> None:
    """``target``: a directory, or a ``.tar`` file; ``hooks``: mmdebstrap customize hooks, in order. Its output
    goes to ``log``."""
    command = ["mmdebstrap", f"--variant={variant}", f"--include={','.join(packages)}"]
    command += [f"--customize-hook={hook}" for hook in hooks]
    with log.open("a") as output:
        done = subprocess.run(
            [*command, SUITE, str(target)], stdout=output, stderr=subprocess.STDOUT, timeout=1800, check=False
        )
    if done.returncode != 0:
        raise processes.ProcessError(f"mmdebstrap failed ({done.returncode}) building {target}; see {log}")
