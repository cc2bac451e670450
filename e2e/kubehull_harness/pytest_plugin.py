"""Session-scoped pytest fixtures over real components: kube-apiserver + etcd, and an OCI registry with images.

Loaded for every test run through ``-p kubehull_harness.pytest_plugin`` (pyproject.toml). Each fixture starts
its processes once per session and stops them at the end. Their logs go to ``test-logs/`` at the repository
root; the directory is removed after a run with no failures and kept (and named in the summary) otherwise, and a
failing test's report ends with the last lines of each log written while it ran.
A missing tool makes the fixture error out with the command that installs it; nothing is skipped.

Under pytest-xdist (``bash .ci/test -n 3 --dist loadgroup``) the tests that boot the VM form one group, those on
the kind cluster and those marked ``beside`` (the operator's, on an API server of their own) a second and all
the others a third, so each runs in a worker of its own: the emulated VM, kind's nodes (Docker containers,
machines of their own) and the operator's tests overlap the host's tests. Tests within a group share the
host as they do in a plain run, one at a time; each worker has its own session fixtures and writes its logs
under ``test-logs/<worker>/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubehull_harness import apiserver, etcd, images, mounts, registry, vm

LOGS_KEY = pytest.StashKey[Path]()
STARTED_KEY = pytest.StashKey[float]()  # when a test's setup began (epoch seconds, as file mtimes)
LOG_TAIL_LINES = 30


def _worker(config: pytest.Config) -> str | None:
    """The xdist worker's name ("gw0"), or None in the controlling (or only) process."""
    workerinput: dict[str, str] | None = getattr(config, "workerinput", None)
    return None if workerinput is None else workerinput["workerid"]


def pytest_configure(config: pytest.Config) -> None:
    logs = Path(config.rootpath) / "test-logs"
    worker = _worker(config)
    if worker is None and logs.exists():
        shutil.rmtree(logs)
    if worker is None and config.option.basetemp:
        # A killed run leaves its kubelet's and hulld's mounts under the base directory, and pytest, which
        # empties it before the run, would fail on them ("File exists").
        mounts.unmount_under(Path(config.option.basetemp).resolve())
    config.stash[LOGS_KEY] = logs if worker is None else logs / worker


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))


def _group(item: pytest.Item) -> str:
    """The worker a test runs in: the VM's; the kind cluster's, with the tests marked ``beside`` (kind's nodes
    and an operator's API server are their own, so they run beside the host's tests); or the host's."""
    if item.get_closest_marker("vm"):
        return "vm"
    if item.get_closest_marker("kind") or item.get_closest_marker("beside"):
        return "kind"
    return "host"


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Host tests running side by side would see each other's cgroups, mounts and processes as leftovers: the
    run stops if a worker's tests did not get their groups (xdist names each test's group in its ID, "...@vm")."""
    if node.config.getvalue("dist") != "loadgroup":
        return
    ungrouped = [nodeid for nodeid in ids if "@" not in nodeid.rpartition("]")[2]]
    if ungrouped:
        pytest.exit(
            f"pytest-xdist did not group {ungrouped[0]} (and {len(ungrouped) - 1} more): this pytest and"
            " pytest-xdist do not work together for --dist loadgroup (pytest-xdist#1386); see pyproject.toml",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    logs = session.config.stash[LOGS_KEY]
    if _worker(session.config) is None and session.testsfailed == 0 and exitstatus == 0 and logs.exists():
        shutil.rmtree(logs)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report carries the last lines of every component log written while it ran."""
    report: pytest.TestReport = yield
    if call.when == "setup":
        item.stash[STARTED_KEY] = call.start
    if report.failed:
        logs = item.config.stash[LOGS_KEY]
        since = item.stash.get(STARTED_KEY, call.start)
        for log in sorted(logs.glob("*.log")) if logs.exists() else []:
            if log.stat().st_mtime >= since:
                lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                report.sections.append((f"last lines of {log.name}", "\n".join(lines)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    logs = config.stash[LOGS_KEY]
    if logs.exists():
        terminalreporter.write_line(f"component logs kept in {logs}")


@pytest.fixture(scope="session")
def component_logs(pytestconfig: pytest.Config) -> Path:
    logs = pytestconfig.stash[LOGS_KEY]
    logs.mkdir(parents=True, exist_ok=True)
    return logs


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory, component_logs: Path) -> Iterator[apiserver.KubeAPIServer]:
    """etcd + kube-apiserver; ``.kubeconfig`` is an admin kubeconfig, ``.api_client()`` a ready client."""
    work_dir = tmp_path_factory.mktemp("control-plane")
    store = etcd.start(work_dir, component_logs)
    try:
        server = apiserver.start(work_dir, component_logs, store.client_url)
        try:
            yield server
        finally:
            server.stop()
    finally:
        store.stop()


class OCIRegistry:
    """The running registry, the images pushed to it, and critest's images file."""

    def __init__(
        self, served: registry.Registry, work_dir: Path, pushed: dict[str, images.PushedImage], images_file: Path
    ) -> None:
        self.host = served.host
        self.served = served
        self.work_dir = work_dir
        self.storage = work_dir / "registry" / "storage"
        """The registry's own files (tests that need a broken blob break one here)."""
        self.images = pushed
        self.critest_images_file = images_file

    def push(self, spec: images.ImageSpec, *skopeo_options: str) -> images.PushedImage:
        """Build and push one more image, e.g. under another repository or compressed otherwise."""
        source = images.build(spec, self.work_dir / "images" / "layout", self.work_dir / "images")
        return images.push(source, spec, self.served, self.work_dir / "images", *skopeo_options)


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory, component_logs: Path) -> Iterator[OCIRegistry]:
    work_dir = tmp_path_factory.mktemp("registry")
    served = registry.start(work_dir / "registry", component_logs)
    try:
        pushed = images.preload(served, work_dir / "images")
        images.preload_critest(served, work_dir / "images")
        images_file = work_dir / "critest-images.yaml"
        images.write_critest_images_file(images_file, pushed)
        yield OCIRegistry(served, work_dir, pushed, images_file)
    finally:
        served.stop()


@pytest.fixture(scope="session")
def image_build_dir(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """Where the session's workers share one build of kubehull's image (``deploy.build_and_push_image``): under
    the run's base directory, which a worker's own is inside of, and which each run empties."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if _worker(pytestconfig) else base) / "kubehull-image"


@pytest.fixture(scope="session")
def vm_live_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the VM sees at the same path while this machine writes to it: what a test hands the VM as it
    goes, a cluster's certificates and kubeconfigs."""
    return tmp_path_factory.mktemp("vm-live")


@pytest.fixture(scope="session")
def debian_vm(
    tmp_path_factory: pytest.TempPathFactory, component_logs: Path, pytestconfig: pytest.Config, vm_live_dir: Path
) -> Iterator[vm.DebianVM]:
    """A Debian 12 VM with systemd and cgroup v2 (vm.py), the checkout shared, booted once for the session: each
    boot is a minute or more of emulation. The tests that use it run one at a time, in a worker of their own
    under xdist, and each leaves it as it found it (its hulld units stopped, its pods removed). It has a link to
    this machine (vm.HostLink) for a cluster's API server, and memory for a node's pods."""
    checkout = Path(pytestconfig.rootpath)
    with vm.booted(
        tmp_path_factory.mktemp("vm"), component_logs, checkout, [vm_live_dir], memory_mib=6144, link=vm.HostLink()
    ) as booted:
        yield booted
