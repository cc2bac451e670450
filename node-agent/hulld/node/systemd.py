"""The systemd units hulld owns under the systemd cgroup driver (its pods' slices), through ``systemctl``: the
kubelet's and the OCI runtimes' own units are theirs."""

from __future__ import annotations

import logging
import re
import subprocess

logger = logging.getLogger(__name__)

UNIT_NAME = re.compile(r"^[A-Za-z0-9_.:-]+\.(slice|scope)$")


def _systemctl(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *arguments], capture_output=True, text=True, timeout=60, check=False)


def set_properties(unit: str, properties: dict[str, str]) -> None:
    """Set a unit's resource properties until the next boot (systemd writes the cgroup files itself); they
    hold for a slice not started yet too."""
    if not UNIT_NAME.match(unit):
        raise ValueError(f"{unit!r} is not a slice or scope name")
    if not properties:
        return
    done = _systemctl("set-property", "--runtime", unit, *(f"{name}={value}" for name, value in properties.items()))
    if done.returncode != 0:
        raise RuntimeError(f"systemctl set-property {unit}: {done.stderr.strip()}")


def stop(unit: str) -> None:
    """Stop a unit and drop the properties set on it; a unit that is not running is no error."""
    if not UNIT_NAME.match(unit):
        raise ValueError(f"{unit!r} is not a slice or scope name")
    for action in ("stop", "revert"):
        done = _systemctl(action, unit)
        if done.returncode != 0:
            logger.warning("systemctl %s %s: %s", action, unit, done.stderr.strip())
