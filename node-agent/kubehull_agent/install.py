"""hulld on the host: installed from the agent's bundle, started and kept running outside the agent's pod.

- ``Installer`` copies the bundle to ``<root>/hulld-<version>`` (under a host-wide lock, into a temporary
  directory renamed into place) and points ``<root>/hulld`` at it: an interrupted install leaves nothing that
  looks installed, and two agents never install at once.
- ``Supervisor`` adopts a running hulld of the same version, starts one if none runs, and upgrades in place
  when the versions differ: hulld stops, the new one starts and recovers every container (their conmon
  monitors do not depend on hulld, so running containers are not disturbed). Where the host runs systemd,
  hulld is its unit ``hulld.service`` (restarted if it dies, started at boot); elsewhere a detached host
  process with its own pid file. Either way it survives the agent's pod; from a pod it is started in the
  host's namespaces and moved out of the pod's cgroups (host.py).
- ``uninstall`` removes hulld only when asked, and never while it still runs pods.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2 as cri
from cri_api.v1 import api_pb2_grpc

from kubehull_agent.host import Host, host_lock


class InstallError(RuntimeError):
    pass


def bundle_version(bundle: Path) -> str:
    return (bundle / "VERSION").read_text().strip()


class Installer:
    def __init__(self, bundle: Path, root: Path, lock: Path) -> None:
        self.bundle = bundle
        self.root = root
        self.lock = lock

    @property
    def current(self) -> Path:
        return self.root / "hulld"

    def ensure(self) -> bool:
        """Install the bundle's version unless it is there; True if it installed something."""
        version = bundle_version(self.bundle)
        target = self.root / f"hulld-{version}"
        with host_lock(self.lock):
            installed = False
            if not (target / "VERSION").is_file():
                staging = self.root / f".hulld-{version}.partial"
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(self.bundle, staging, symlinks=True)
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
                installed = True
            link = self.root / ".hulld.link"
            link.unlink(missing_ok=True)
            link.symlink_to(target.name)
            link.replace(self.current)  # atomic switch
        return installed


UNIT_NAME = "hulld.service"
UNIT_PATH = Path("/etc/systemd/system") / UNIT_NAME
UNIT = """# Written by kubehull-agent; removed by `kubehull-agent --uninstall`.
[Unit]
Description=hulld, kubehull's CRI runtime
Wants=network-online.target
After=local-fs.target network-online.target

[Service]
ExecStart={launcher} --config {config}
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=2
# Each container's monitor is hulld's child but must outlive it (upgrades, restarts): stop hulld alone.
KillMode=process
# Its own slice: the runtime's usage apart from system.slice's, for the kubelet's --runtime-cgroups and limits.
Slice=kubehull.slice
Delegate=yes
OOMScoreAdjust=-999
LimitNOFILE=1048576
TasksMax=infinity

[Install]
WantedBy=multi-user.target
"""


# How long a running hulld may take to answer (it recovers every container first), and to stop.
STARTUP_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0


class Supervisor:
    def __init__(
        self,
        launcher: Path,
        config: Path,
        socket: Path,
        pid_file: Path,
        log_file: Path,
        host: Host,
        *,
        systemd: bool | None = None,
    ) -> None:
        """``systemd``: run hulld as a systemd unit; by default when the host runs systemd (sd_booted(3))."""
        self.launcher = launcher
        self.host = host
        self.config = config
        self.socket = socket
        self.pid_file = pid_file
        self.log_file = log_file
        self.systemd = host.path("/run/systemd/system").is_dir() if systemd is None else systemd

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        # hulld runs as `python -m hulld` (its launcher execs that): not any process that mentions hulld.
        return pid if b"hulld" in arguments else None

    def running_version(self) -> str | None:
        with grpc.insecure_channel(f"unix://{self.socket}") as channel:
            try:
                response = api_pb2_grpc.RuntimeServiceStub(channel).Version(cri.VersionRequest(), timeout=3)
            except grpc.RpcError:
                return None
        return str(response.runtime_version)

    def ensure(self, version: str) -> str:
        """ "adopted", "started" or "upgraded": what it took to have hulld ``version`` running."""
        pid = self.running_pid()
        if pid is not None and self._answering_version(pid) == version:
            return "adopted"
        if pid is not None:
            self.stop(pid)
            self.start(version)
            return "upgraded"
        self.start(version)
        return "started"

    def _answering_version(self, pid: int) -> str | None:
        """The version of the running hulld ``pid``, once it answers: one that is still starting (recovering
        its containers) must not be mistaken for another version and restarted."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while (version := self.running_version()) is None and _alive(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return version

    def stop(self, pid: int) -> None:
        """Stop hulld ``pid`` for good: SIGTERM, SIGKILL if it lingers (never two hulld: the next one would
        refuse to start beside it and leave the node without a runtime)."""
        if self.systemd and self.host.path(UNIT_PATH).exists():  # or systemd would start it again
            self._systemctl("stop", UNIT_NAME)
        for signum, grace in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)  # a hulld started outside the unit (e.g. by the node image)
            deadline = time.monotonic() + grace
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _alive(pid):
                return
        raise InstallError(f"hulld (pid {pid}) did not stop")

    def start(self, version: str) -> None:
        """Start hulld and wait until it answers as ``version``."""
        if self.systemd:
            self._start_unit()
        else:
            self._start_detached()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while (answering := self.running_version()) != version:
            if time.monotonic() > deadline:
                where = f"journalctl -u {UNIT_NAME}" if self.systemd else str(self.log_file)
                raise InstallError(f"hulld {version} did not start (answering: {answering}); see {where}")
            time.sleep(0.1)

    def remove_unit(self) -> None:
        if self.systemd and self.host.path(UNIT_PATH).exists():
            self._systemctl("disable", "--now", UNIT_NAME)
            self.host.path(UNIT_PATH).unlink()
            self._systemctl("daemon-reload")

    def _systemctl(self, *args: str) -> None:
        result = subprocess.run(
            self.host.command(["systemctl", *args]), capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise InstallError(f"systemctl {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")

    def _start_unit(self) -> None:
        unit = self.host.path(UNIT_PATH)
        staging = unit.with_name(f".{UNIT_NAME}.new")
        staging.write_text(UNIT.format(launcher=self.launcher, config=self.config))
        staging.replace(unit)
        self._systemctl("daemon-reload")
        # `start`, not `restart`: a hulld systemd is bringing back right now is left alone.
        self._systemctl("enable", "--now", UNIT_NAME)

    def _start_detached(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        command = self.host.command([str(self.launcher), "--config", str(self.config)])
        with self.log_file.open("ab") as log:
            # A session of its own: hulld outlives the agent and its pod.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        self.host.adopt_process(process.pid)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs: an exited child of ours (a hulld this agent started) is reaped, not
    counted."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def uninstall(installer: Installer, supervisor: Supervisor) -> None:
    """Stop hulld and remove every installed version; refused while hulld runs pods (or cannot tell)."""
    pid = supervisor.running_pid()
    if pid is not None or supervisor.running_version() is not None:
        with grpc.insecure_channel(f"unix://{supervisor.socket}") as channel:
            try:
                pods = api_pb2_grpc.RuntimeServiceStub(channel).ListPodSandbox(cri.ListPodSandboxRequest(), timeout=10)
            except grpc.RpcError as error:
                raise InstallError(f"cannot list hulld's pods, so not uninstalling: {error.details()}") from error
        if pods.items:
            raise InstallError(f"hulld still runs {len(pods.items)} pods on this node; drain it before uninstalling")
    if pid is not None:
        supervisor.stop(pid)
    supervisor.remove_unit()
    with host_lock(installer.lock):
        installer.current.unlink(missing_ok=True)
        for installed in installer.root.glob("hulld-*"):
            shutil.rmtree(installed)
