"""The test toolchain: third-party binaries built from their Go modules and cached by version.

kubehull's tests run against real Kubernetes components, a real etcd and the CRI test tools. None of them is
downloadable here as a release binary, so this module builds each one from its Go module in a scratch module,
stamps its version, checks it runs, and caches it under ``$KUBEHULL_CACHE/bin/<component>-<version>/``.
A component whose directory exists is never rebuilt: a build goes to a temporary directory that is renamed into
place only after its binaries pass their checks, so an interrupted build leaves nothing that looks finished.

It uses only the standard library because ``.ci/`` runs it before the project's virtualenv exists, and the test
harness imports ``binary()`` from it to find the cached files.

    python3 e2e/kubehull_harness/toolchain.py build      # build whatever is not cached yet
    python3 e2e/kubehull_harness/toolchain.py paths      # print the binary paths (NAME=PATH lines)

Besides Kubernetes, etcd, helm, cri-tools, kind and CoreDNS it builds a current gVisor (runsc and its containerd shim)
and the current containerd (the benchmark's peer).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

VERSIONS_FILE = Path(__file__).with_name("versions.toml")


def cache_dir() -> Path:
    return Path(os.environ.get("KUBEHULL_CACHE", Path.home() / ".cache" / "kubehull"))


@dataclasses.dataclass(frozen=True)
class Component:
    name: str
    module: str
    version: str
    binaries: tuple[str, ...]
    staging_version: str = ""
    build: int = 1
    """Raised when the way a version is built changes, so that a cache of the old build is not taken for it."""

    @property
    def bin_dir(self) -> Path:
        suffix = f"-build{self.build}" if self.build > 1 else ""
        return cache_dir() / "bin" / f"{self.name}-{self.version}{suffix}"


def components() -> dict[str, Component]:
    table = tomllib.loads(VERSIONS_FILE.read_text())
    return {
        name: Component(
            name=name,
            module=entry["module"],
            version=entry["version"],
            binaries=tuple(entry["binaries"]),
            staging_version=entry.get("staging_version", ""),
            build=entry.get("build", 1),
        )
        for name, entry in table.items()
    }


class ToolchainError(RuntimeError):
    pass


def binary(name: str) -> Path:
    """The cached path of one binary, e.g. ``binary("kube-apiserver")``; raises if it was not built."""
    for component in components().values():
        if name in component.binaries:
            path = component.bin_dir / name
            if not path.is_file():
                raise ToolchainError(
                    f"{name} {component.version} is not in the cache ({path}); "
                    "build it with: python3 e2e/kubehull_harness/toolchain.py build"
                )
            return path
    raise ToolchainError(f"{name} is not a toolchain binary (see {VERSIONS_FILE})")


# --- building -------------------------------------------------------------------------------------------------


def _go(args: list[str], cwd: Path, log: Path) -> None:
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -trimpath -buildvcs=false", GOWORK="off")
    print(f"  $ go {' '.join(args)}", flush=True)
    with log.open("a") as out:
        out.write(f"\n$ go {' '.join(args)}\n")
        out.flush()
        result = subprocess.run(["go", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise ToolchainError(f"go {' '.join(args)} failed (exit {result.returncode}); log {log}:\n{tail}")


def _write_module(scratch: Path, requires: dict[str, str], replaces: dict[str, str], main_go: str = "") -> None:
    scratch.mkdir(parents=True, exist_ok=True)
    lines = [f"module kubehull.local/toolchain/{scratch.name}", "", "go 1.26", "", "require ("]
    lines += [f"\t{module} {version}" for module, version in requires.items()]
    lines.append(")")
    if replaces:
        lines += ["", "replace ("]
        lines += [f"\t{module} => {module} {version}" for module, version in replaces.items()]
        lines.append(")")
    (scratch / "go.mod").write_text("\n".join(lines) + "\n")
    if main_go:
        (scratch / "main.go").write_text(main_go)


def _module_file(module: str, version: str, scratch: Path, log: Path) -> dict[str, Any]:
    """`go mod download -json` facts (GoMod, Dir, Origin...) for one module version."""
    env = dict(os.environ, GOFLAGS="-mod=mod", GOWORK="off")
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
    )
    with log.open("a") as out:
        out.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise ToolchainError(f"go mod download {module}@{version} failed: {result.stdout}{result.stderr}")
    facts: dict[str, Any] = json.loads(result.stdout)
    return facts


def _build_kubernetes(component: Component, scratch: Path, out: Path, log: Path) -> None:
    # k8s.io/kubernetes replaces its staging modules with ./staging/src/..., which module downloads lack; so a
    # scratch module requires it and replaces each staging module with its published copy at staging_version.
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "go.mod").write_text("module kubehull.local/toolchain/probe\n\ngo 1.26\n")
    facts = _module_file(component.module, component.version, scratch, log)
    gomod = Path(facts["GoMod"]).read_text()
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", gomod, re.MULTILINE)))
    if not staging:
        raise ToolchainError(f"no staging replacements found in {facts['GoMod']}")
    _write_module(
        scratch,
        requires={component.module: component.version},
        replaces={module: component.staging_version for module in staging},
    )
    major, minor = re.match(r"v(\d+)\.(\d+)", component.version).groups()  # type: ignore[union-attr]
    stamp = {
        "gitVersion": component.version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": facts.get("Origin", {}).get("Hash", ""),
        "gitTreeState": "clean",
        "buildDate": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    ldflags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        ldflags += [f"-X {package}.{key}={value}" for key, value in stamp.items()]
    packages = [f"{component.module}/cmd/{name}" for name in component.binaries]
    _go(["build", "-ldflags", " ".join(ldflags), "-o", str(out) + "/", *packages], scratch, log)


def _build_etcd(component: Component, scratch: Path, out: Path, log: Path) -> None:
    # The etcd binary's main lives in the root module; server/v3's etcdmain is the whole program behind it.
    main_go = (
        'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    _write_module(scratch, requires={component.module: component.version}, replaces={}, main_go=main_go)
    _go(["build", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."], scratch, log)


def _build_helm(component: Component, scratch: Path, out: Path, log: Path) -> None:
    _write_module(scratch, requires={component.module: component.version}, replaces={})
    # As helm's own Makefile: the Kubernetes version helm assumes without a cluster (`helm template`, lint) is
    # that of the client-go it is built with (v0.N is Kubernetes 1.N); unstamped, helm says 1.20.
    gomod = Path(_module_file(component.module, component.version, scratch, log)["GoMod"]).read_text()
    client_go = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", gomod, re.MULTILINE)
    if client_go is None:
        raise ToolchainError(f"{component.module} {component.version} requires no k8s.io/client-go")
    stamp = [f"-X {component.module}/internal/version.version={component.version}"]
    for package in ("pkg/chartutil", "pkg/lint/rules"):
        stamp += [f"-X {component.module}/{package}.k8sVersionMajor=1"]
        stamp += [f"-X {component.module}/{package}.k8sVersionMinor={client_go.group(1)}"]
    ldflags = " ".join(["-s", "-w", *stamp])
    _go(["build", "-ldflags", ldflags, "-o", str(out / "helm"), f"{component.module}/cmd/helm"], scratch, log)


def _build_cri_tools(component: Component, scratch: Path, out: Path, log: Path) -> None:
    _write_module(scratch, requires={component.module: component.version}, replaces={})
    ldflags = f"-s -w -X {component.module}/pkg/version.Version={component.version}"
    _go(["build", "-ldflags", ldflags, "-o", str(out / "crictl"), f"{component.module}/cmd/crictl"], scratch, log)
    # critest is the cmd/critest package's test binary.
    _go(
        ["test", "-c", "-ldflags", ldflags, "-o", str(out / "critest"), f"{component.module}/cmd/critest"], scratch, log
    )


def _build_gvisor(component: Component, scratch: Path, out: Path, log: Path) -> None:
    _write_module(scratch, requires={component.module: component.version}, replaces={})
    ldflags = f"-s -w -X {component.module}/runsc/version.version={component.version}"
    _go(["build", "-ldflags", ldflags, "-o", str(out / "runsc"), f"{component.module}/runsc"], scratch, log)
    shim = out / "containerd-shim-runsc-v1"
    _go(["build", "-ldflags", "-s -w", "-o", str(shim), f"{component.module}/shim"], scratch, log)


def _build_containerd(component: Component, scratch: Path, out: Path, log: Path) -> None:
    _write_module(scratch, requires={component.module: component.version}, replaces={})
    ldflags = f"-s -w -X {component.module}/version.Version={component.version}"
    packages = [f"{component.module}/cmd/{name}" for name in component.binaries]
    _go(["build", "-ldflags", ldflags, "-o", str(out) + "/", *packages], scratch, log)


def _build_module_command(component: Component, scratch: Path, out: Path, log: Path) -> None:
    """A module whose root package is its one command (kind, coredns)."""
    _write_module(scratch, requires={component.module: component.version}, replaces={})
    (binary,) = component.binaries
    _go(["build", "-ldflags", "-s -w", "-o", str(out / binary), component.module], scratch, log)


BUILDERS: dict[str, Callable[[Component, Path, Path, Path], None]] = {
    "kubernetes": _build_kubernetes,
    "kubeadm": _build_kubernetes,
    "etcd": _build_etcd,
    "helm": _build_helm,
    "cri-tools": _build_cri_tools,
    "gvisor": _build_gvisor,
    "containerd": _build_containerd,
    "kind": _build_module_command,
    "coredns": _build_module_command,
}

# How each binary reports its version (default: --version); the component's version must be in the output.
VERSION_COMMANDS: dict[str, list[str]] = {
    "kubectl": ["version", "--client"],
    "helm": ["version", "--short"],
    "crictl": ["--version"],
    "critest": ["-version"],
    "kind": ["version"],
    "coredns": ["-version"],
    "kubeadm": ["version", "-o", "short"],
    "containerd-shim-runsc-v1": ["-v"],
    "containerd-shim-runc-v2": ["-v"],
}
# Binaries that print their own library's version, not the component's: this text shows they run.
VERSION_TEXT: dict[str, str] = {"containerd-shim-runsc-v1": "Version:"}


def check(component: Component, directory: Path) -> None:
    """Run every binary of a component and make sure it reports the pinned version."""
    for name in component.binaries:
        expected = VERSION_TEXT.get(name, component.version.lstrip("v"))
        command = [str(directory / name), *VERSION_COMMANDS.get(name, ["--version"])]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        output = result.stdout + result.stderr
        if result.returncode != 0 or expected not in output:
            raise ToolchainError(f"{' '.join(command)} (exit {result.returncode}) did not report {expected}: {output}")
        print(f"  ok {name}: {output.strip().splitlines()[0]}", flush=True)


def build(names: list[str]) -> None:
    table = components()
    for name in names or list(table):
        component = table[name]
        if all((component.bin_dir / binary_name).is_file() for binary_name in component.binaries):
            print(f"{name} {component.version}: cached in {component.bin_dir}", flush=True)
            continue
        print(f"{name} {component.version}: building", flush=True)
        started = time.monotonic()
        scratch = cache_dir() / "build" / f"{name}-{component.version}"
        log = cache_dir() / "build" / f"{name}-{component.version}.log"
        scratch.parent.mkdir(parents=True, exist_ok=True)
        component.bin_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=component.bin_dir.parent, prefix=f".{name}-") as staging:
            BUILDERS[name](component, scratch, Path(staging), log)
            check(component, Path(staging))
            if component.bin_dir.exists():
                shutil.rmtree(component.bin_dir)
            os.rename(staging, component.bin_dir)
            Path(staging).mkdir()  # TemporaryDirectory removes its own path on exit
        print(f"{name} {component.version}: built in {time.monotonic() - started:.0f}s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build_parser = sub.add_parser("build", help="build and cache every component that is not cached yet")
    build_parser.add_argument("components", nargs="*", help="only these components (default: all)")
    sub.add_parser("check", help="run every cached binary and check its version")
    sub.add_parser("paths", help="print NAME=PATH for every binary")
    args = parser.parse_args()
    try:
        if args.command == "build":
            build(args.components)
        elif args.command == "check":
            for component in components().values():
                check(component, component.bin_dir)
        else:
            for component in components().values():
                for name in component.binaries:
                    print(f"{name}={component.bin_dir / name}")
    except ToolchainError as error:
        print(f"toolchain: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
