"""kubehull's self-contained runtime: the bundle the image carries and the agent installs on hosts.

    python -m kubehull_agent.bundle DEST        # build it from the environment kubehull is installed in

The image runs the operator and the agent from it, and the agent copies it to the host to run hulld there, so
hosts need no Python. Layout (relocatable: each launcher finds everything relative to itself):

    DEST/VERSION             hulld's version
    DEST/python/             the CPython kubehull runs on: interpreter, libpython, standard library
    DEST/site-packages/      kubehull and its dependencies, the very files installed beside it
    DEST/bin/<command>       launchers: hulld, kubehull-agent, kubehull-operator, kubehull-uninstall

The shared libraries the interpreter and the extension modules link against come along in python/lib
(OpenSSL, libffi, zlib, ...), all but the C library itself: hosts need a glibc at least as new as the
building machine's (docs/image.md).
"""

from __future__ import annotations

import argparse
import compileall
import importlib.metadata
import py_compile
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import hulld

DISTRIBUTION = "kubehull"
PACKAGES = ("kubehull_api", "kubehull_operator", "kubehull_agent", "hulld")
COMMANDS = {
    "hulld": "hulld",
    "kubehull-agent": "kubehull_agent",
    "kubehull-operator": "kubehull_operator",
    "kubehull-uninstall": "kubehull_operator.uninstall",
}
STDLIB_SKIPPED = (
    "site-packages",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "__pycache__",
    "config-3.*",
    "_tkinter*",  # Tk, and X11 with it, in an image without a display
)
# The C library's own parts: the host provides these (they must match its dynamic loader).
GLIBC = (
    "ld-linux",
    "libc.so",
    "libm.so",
    "libmvec.so",
    "libpthread.so",
    "libdl.so",
    "librt.so",
    "libresolv.so",
    "libutil.so",
    "libanl.so",
    "libnss_",
)
LAUNCHER = """#!/bin/sh
# {command} from kubehull's bundle: the bundled interpreter and libraries, nothing from the host's Python.
here=$(dirname "$(readlink -f "$0")")/..
export LD_LIBRARY_PATH="$here/python/lib" PYTHONPATH="$here/site-packages" PYTHONNOUSERSITE=1
exec "$here/python/bin/python3" -s -m {module} "$@"
"""


def dependencies(name: str) -> list[importlib.metadata.Distribution]:
    """``name`` and every distribution it requires, transitively, as installed here (extras left out)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [name]
    while pending:
        wanted = pending.pop()
        key = re.sub(r"[-_.]+", "-", wanted).lower()
        if key in found:
            continue
        try:
            distribution = importlib.metadata.distribution(wanted)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement whose marker excludes this interpreter
        found[key] = distribution
        for requirement in distribution.requires or ():
            if "extra ==" not in requirement:
                pending.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return list(found.values())


def _copy_distribution(distribution: importlib.metadata.Distribution, site_packages: Path) -> None:
    root = Path(str(distribution.locate_file(""))).resolve()
    for file in distribution.files or ():
        source = Path(str(distribution.locate_file(file))).resolve()
        if "__pycache__" in file.parts or not source.is_relative_to(root) or not source.is_file():
            continue  # console scripts live outside site-packages; an editable install points at the tree
        target = site_packages / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _copy_packages(distribution: importlib.metadata.Distribution, site_packages: Path) -> None:
    """kubehull's own packages from wherever they are imported from (an editable install is only a pointer)."""
    for module in PACKAGES:
        package = Path(__import__(module).__file__ or "").parent
        shutil.copytree(package, site_packages / module, ignore=shutil.ignore_patterns("__pycache__"))
    metadata = site_packages / f"{DISTRIBUTION}-{distribution.version}.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(distribution.read_text("METADATA") or "")


def elf_files(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def linked_libraries(binaries: list[Path], library_path: Path) -> set[Path]:
    """Every shared library the binaries load (as ``ldd`` finds them with ``library_path`` first)."""
    libraries: set[Path] = set()
    for binary in binaries:
        output = subprocess.run(
            ["ldd", str(binary)],
            capture_output=True,
            text=True,
            check=False,
            env={"LD_LIBRARY_PATH": str(library_path)},
        ).stdout
        if "not found" in output:
            raise SystemExit(f"{binary} needs a library this machine lacks:\n{output}")
        libraries.update(Path(match) for match in re.findall(r"(/\S+)\s+\(0x", output))
    return libraries


def build(destination: Path) -> set[Path]:
    """Build the bundle at ``destination``; returns the host libraries it still needs (the C library's own)."""
    if destination.exists():
        raise SystemExit(f"{destination} exists")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=destination.parent))
    try:
        from_host = _assemble(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.chmod(0o755)
    staging.rename(destination)
    return from_host


def _assemble(staging: Path) -> set[Path]:
    prefix = Path(sys.base_prefix)
    for directory in ("bin", "lib"):
        (staging / "python" / directory).mkdir(parents=True)
    shutil.copy2(Path(sys.executable).resolve(), staging / "python" / "bin" / "python3")
    for library in (prefix / "lib").glob("libpython*.so*"):
        shutil.copy2(library, staging / "python" / "lib" / library.name)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(stdlib, staging / "python" / "lib" / stdlib.name, ignore=shutil.ignore_patterns(*STDLIB_SKIPPED))
    site_packages = staging / "site-packages"
    site_packages.mkdir()
    for distribution in dependencies(DISTRIBUTION):
        if distribution.metadata["Name"] == DISTRIBUTION:
            _copy_packages(distribution, site_packages)
        else:
            _copy_distribution(distribution, site_packages)
    bundled = staging / "python" / "lib"
    from_host = set()
    for library in linked_libraries(elf_files(staging), bundled):
        if library.is_relative_to(bundled):
            continue
        if library.name.startswith(GLIBC):
            from_host.add(library)
        else:
            shutil.copy2(library.resolve(), bundled / library.name)
    # Byte-compiled ahead: the operator's root filesystem is read-only, so nothing could cache them later.
    for tree in (site_packages, staging / "python" / "lib" / stdlib.name):
        compileall.compile_dir(tree, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    (staging / "bin").mkdir()
    for command, module in COMMANDS.items():
        launcher = staging / "bin" / command
        launcher.write_text(LAUNCHER.format(command=command, module=module))
        launcher.chmod(0o755)
    (staging / "VERSION").write_text(hulld.__version__ + "\n")
    return from_host


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
