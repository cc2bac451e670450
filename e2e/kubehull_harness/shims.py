"""containerd shim v2 binaries as hulld handlers on this machine: containerd's runc shim as it is, and gVisor's
runsc shim with a configuration file and, for want of CAP_SYS_RESOURCE here, ``shim_start`` doing its ``start``
(see there)."""

from __future__ import annotations

import sys
from pathlib import Path

from kubehull_harness import toolchain

RUNC_SHIM = Path("/usr/bin/containerd-shim-runc-v2")


def runsc_shim(directory: Path, runsc: Path | None = None) -> tuple[Path, Path]:
    """(the shim to name as the handler's binary, its configuration file), written into ``directory``: the
    toolchain's runsc (or ``runsc``), its state under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = toolchain.binary("containerd-shim-runsc-v1")
    start = f"{sys.executable} {Path(__file__).with_name('shim_start.py')} {shim}"
    wrapper = directory / "containerd-shim-runsc-v1"
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" start "*) exec {start} "$@";; esac\nexec {shim} "$@"\n')
    wrapper.chmod(0o755)
    config = directory / "runsc-shim.toml"
    config.write_text(f'binary_name = "{runsc or toolchain.binary("runsc")}"\nroot = "{directory / "runsc-root"}"\n')
    return wrapper, config
