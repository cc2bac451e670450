"""The self-contained hulld bundle the agent installs on hosts that need not have Python.

    python -m kubehull_agent.bundle DEST        # build it (the agent image ships one at /usr/share/kubehull)

Layout (relocatable: the launcher finds everything relative to itself):

    DEST/VERSION             hulld's version
    DEST/python/             the CPython the agent runs on: interpreter, libpython, standard library
    DEST/site-packages/      hulld and exactly the library versions installed beside the agent
    DEST/bin/hulld           launcher: runs python/bin/python3 -m hulld with only the bundle on its path
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import hulld

# hulld's own runtime dependencies (its imports), at the versions installed here.
REQUIREMENTS = (
    "container-runtime-interface-api",
    "grpcio",
    "protobuf",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-extensions",
    "typing-inspection",
    "prometheus-client",
    "urllib3",
    "zstandard",
)
STDLIB_SKIPPED = (
    "site-packages",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "__pycache__",
    "config-3.11-x86_64-linux-gnu",
)
LAUNCHER = """#!/bin/sh
# hulld from its bundle: the bundled interpreter, the bundled libraries, nothing from the host's Python.
here=$(dirname "$(readlink -f "$0")")/..
export LD_LIBRARY_PATH="$here/python/lib" PYTHONPATH="$here/site-packages" PYTHONNOUSERSITE=1
exec "$here/python/bin/python3" -s -m hulld "$@"
"""


def build(destination: Path) -> None:
    if destination.exists():
        raise SystemExit(f"{destination} exists")
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=destination.parent))
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for directory in ("bin", "lib"):
        (staging / "python" / directory).mkdir(parents=True)
    shutil.copy2(Path(sys.executable).resolve(), staging / "python" / "bin" / "python3")
    for library in (prefix / "lib").glob("libpython*.so*"):
        shutil.copy2(library, staging / "python" / "lib" / library.name)
    shutil.copytree(
        Path(sysconfig.get_paths()["stdlib"]),
        staging / "python" / "lib" / version,
        ignore=shutil.ignore_patterns(*STDLIB_SKIPPED),
    )
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(staging / "site-packages"),
            *pins,
        ],
        check=True,
    )
    shutil.copytree(
        Path(hulld.__file__).parent, staging / "site-packages" / "hulld", ignore=shutil.ignore_patterns("__pycache__")
    )
    (staging / "bin").mkdir()
    (staging / "bin" / "hulld").write_text(LAUNCHER)
    (staging / "bin" / "hulld").chmod(0o755)
    (staging / "VERSION").write_text(hulld.__version__ + "\n")
    staging.rename(destination)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubehull_agent.bundle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("destination", type=Path)
    build(parser.parse_args().destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())
