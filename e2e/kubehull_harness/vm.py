"""A Debian 12 VM for the tests that need what this machine lacks: systemd as PID 1 and the unified cgroup v2
hierarchy, as on every current Kubernetes node.

The image is built from Debian's packages only (``mmdebstrap``: Debian's own kernel, systemd, the runtimes
hulld drives) and cached under ``$KUBEHULL_CACHE/vm/`` by a digest of its recipe. Each VM boots a
copy-on-write overlay of it under ``qemu-system-x86_64``: TCG emulation, as this machine's KVM cannot boot a
stock kernel (``KUBEHULL_VM_ACCEL=kvm`` where it can). The host directories a test needs (the checkout with its
virtualenv, the Python installation that virtualenv points at, the toolchain cache) are shared read-only over
9p at the same paths, so the VM runs the host's hulld and binaries as they are. Commands run over SSH on a
forwarded loopback port; the host's loopback is ``10.0.2.2`` from inside (the test registry is reachable there).

    python -m kubehull_harness vm build          # build the image if it is not cached
    python -m kubehull_harness vm run -- CMD     # boot, run CMD, shut down
"""

from __future__ import annotations

import compileall
import contextlib
import dataclasses
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from kubehull_harness import debian, processes, toolchain

SUITE = debian.SUITE
PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "dbus",  # runc's and runsc's systemd cgroup mode talk to systemd over D-Bus
    "udev",
    "kmod",
    "openssh-server",
    "runc",
    "conmon",
    "containernetworking-plugins",
    "golang-github-containers-common",  # /usr/share/containers/seccomp.json: RuntimeDefault
    "busybox-static",  # the pod infra container's one binary
    "iproute2",
    "iptables",
    "procps",
    "iputils-ping",
    "conntrack",  # kube-proxy
)
MASKED_UNITS = (
    # Timers and services a test VM has no use for, each of which costs boot time under emulation.
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "logrotate.timer",
    "man-db.timer",
    "systemd-timesyncd.service",
    "getty@tty1.service",
)
NETWORK = "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n"
SYSTEM_CONF = "[Manager]\nDefaultTimeoutStopSec=10s\n"
"""A test VM is powered off with whatever its tests left running (a container that ignores SIGTERM, a conmon):
systemd's default would wait 90 s for each before killing it."""
IMAGE_SIZE = "4G"
HOST_FROM_GUEST = "10.0.2.2"
"""The host's loopback as the VM sees it (QEMU's user networking)."""
PYTHON_PACKAGE_ROOTS = ("node-agent", "operator")  # the checkout's, as its virtualenv finds them
VM_NICENESS = -10
"""QEMU's scheduling priority, ahead of the host's processes. Beside a busy host an emulated guest slowed 3-6x
rather than 2x (critest's lifecycle specs 84 s alone, 542 s beside the host's tests in CI run 41), most likely as
a vCPU thread preempted while the guest's kernel holds a lock on it stalls the other vCPU too."""
VM_CPUS = 1
"""One vCPU. Beside a busy host, two cost a third more CPU for the same work and took longer (critest's
lifecycle specs under runc beside two busy loops: 219 CPU-seconds and 222 s with two vCPUs, 173 and 198 s with
one, 2026-12-03), most likely a vCPU spinning while it waits on the other (an IPI's answer, a lock its holder
took before its thread was preempted). Alone on the machine two are a little faster (186 and 133 s)."""
RECIPE = "\n".join([SUITE, *PACKAGES, *MASKED_UNITS, NETWORK, SYSTEM_CONF, IMAGE_SIZE, "recipe 2"])


class VMError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class HostLink:
    """A network between this machine and the VM (a TAP device), for what QEMU's user networking cannot carry:
    connections from here to the VM (the API server to its kubelet) and between pods and the API server."""

    device: str = "kubehullvm0"
    host_address: str = "192.168.234.1"
    guest_address: str = "192.168.234.2"
    prefix: int = 24
    mac: str = "52:54:00:6b:68:01"


class Image:
    """A built, cached VM image: its root filesystem, the kernel and initrd it boots, the SSH key for root."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.disk = directory / "root.img"
        self.kernel = directory / "vmlinuz"
        self.initrd = directory / "initrd.img"
        self.key = directory / "id_ed25519"


def image_dir() -> Path:
    digest = hashlib.sha256(RECIPE.encode()).hexdigest()[:12]
    return toolchain.cache_dir() / "vm" / f"debian-{SUITE}-{digest}"


def build_image(log: Path | None = None) -> Image:
    """The cached image, built first if it is not there. A build goes to a temporary directory renamed into
    place when complete, so an interrupted one leaves nothing that looks finished."""
    target = image_dir()
    if target.is_dir():
        return Image(target)
    for tool in ("mmdebstrap", "mke2fs", "qemu-system-x86_64", "qemu-img", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise VMError(f"{tool} is not installed (.ci/install installs it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="building-", dir=target.parent))
    try:
        image = Image(scratch)
        processes.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kubehull-vm", "-f", image.key])
        rootfs = scratch / "rootfs"
        setup = " && ".join(
            [
                'mkdir -p "$1/root/.ssh"',
                f'cp {shlex.quote(str(image.key))}.pub "$1/root/.ssh/authorized_keys"',
                'chmod 700 "$1/root/.ssh"',
                'echo kubehull-vm > "$1/etc/hostname"',
                'echo "/dev/vda / ext4 rw 0 1" > "$1/etc/fstab"',
                f'printf %s {shlex.quote(NETWORK)} > "$1/etc/systemd/network/20-wired.network"',
                'mkdir -p "$1/etc/systemd/system.conf.d"',
                f'printf %s {shlex.quote(SYSTEM_CONF)} > "$1/etc/systemd/system.conf.d/kubehull.conf"',
                'chroot "$1" systemctl enable systemd-networkd',
                f'chroot "$1" systemctl mask {" ".join(MASKED_UNITS)}',
                'echo "UseDNS no" > "$1/etc/ssh/sshd_config.d/kubehull.conf"',
            ]
        )
        debian.bootstrap(rootfs, PACKAGES, log or Path(os.devnull), variant="apt", hooks=(setup,))
        for name, destination in (("vmlinuz", image.kernel), ("initrd.img", image.initrd)):
            (found,) = sorted((rootfs / "boot").glob(f"{name}-*"))
            shutil.copyfile(found, destination)
        processes.run(["mke2fs", "-q", "-t", "ext4", "-d", rootfs, "-L", "root", image.disk, IMAGE_SIZE], timeout=600)
        shutil.rmtree(rootfs)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for older in target.parent.glob(f"debian-{SUITE}-*"):  # images of earlier recipes
        if older != target:
            shutil.rmtree(older, ignore_errors=True)
    return Image(target)


class DebianVM:
    """One booted VM. ``run`` a command in it as root; ``boot_seconds``: from QEMU's start to SSH answering."""

    def __init__(
        self,
        image: Image,
        work_dir: Path,
        log_dir: Path,
        shares: Sequence[Path],
        live_shares: Sequence[Path] = (),
        *,
        memory_mib: int = 4096,
        cpus: int = VM_CPUS,
        name: str = "debian-vm",
        link: HostLink | None = None,
    ) -> None:
        self.image = image
        # Each share with its mount's caching: cache=loose for what nothing changes while the VM runs (the guest
        # keeps what it read; without it every exec and import reads over 9p again: under emulation hulld's
        # import took 38 s instead of 22 s, each `runsc` run 3.4 s instead of 0.25 s), none for ``live_shares``,
        # which the host writes meanwhile.
        self.mounted = [(share.resolve(), ",cache=loose") for share in shares]
        self.mounted += [(share.resolve(), "") for share in live_shares]
        self.port = processes.free_port()
        self._control_dir: Path | None = None  # the SSH master's socket's, while it runs
        self._master: processes.ManagedProcess | None = None
        self._log_dir = log_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        overlay = work_dir / "overlay.qcow2"
        processes.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", image.disk, "-F", "raw", overlay])
        accel = os.environ.get("KUBEHULL_VM_ACCEL", "tcg,thread=multi")
        # QEMU goes ahead of the host's processes for the CPU (VM_NICENESS).
        argv: list[processes.Arg] = [
            "nice",
            f"--adjustment={VM_NICENESS}",
            "qemu-system-x86_64",
            "-machine",
            "q35",
            "-accel",
            accel,
            "-smp",
            str(cpus),
            "-m",
            str(memory_mib),
            "-nographic",
            "-no-reboot",
            "-kernel",
            image.kernel,
            "-initrd",
            image.initrd,
            "-append",
            "root=/dev/vda rw console=ttyS0 quiet systemd.unified_cgroup_hierarchy=1",
            "-drive",
            f"file={overlay},if=virtio,format=qcow2",
            "-netdev",
            f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device",
            "virtio-net-pci,netdev=net0",
        ]
        for index, (share, _) in enumerate(self.mounted):
            argv += ["-virtfs", f"local,path={share},mount_tag=share{index},security_model=none,readonly=on"]
        self.link = link
        if link is not None:
            _remove_device(link.device)  # a killed run's
            processes.run(["ip", "tuntap", "add", "dev", link.device, "mode", "tap"])
            processes.run(["ip", "address", "add", f"{link.host_address}/{link.prefix}", "dev", link.device])
            processes.run(["ip", "link", "set", link.device, "up"])
            argv += [
                "-netdev",
                f"tap,id=net1,ifname={link.device},script=no,downscript=no",
                "-device",
                f"virtio-net-pci,netdev=net1,mac={link.mac}",
            ]
        started = time.monotonic()
        self.process = processes.ManagedProcess(name, argv, log_dir)
        try:
            self.process.wait_ready(lambda: self._ssh("true", timeout=10).returncode == 0, 300, "answering SSH")
            self.boot_seconds = time.monotonic() - started
            self._connect()
            mounts = [
                f"mkdir -p {shlex.quote(str(share))} && mount -t 9p"
                f" -o trans=virtio,version=9p2000.L,msize=262144,ro{caching} share{index} {shlex.quote(str(share))}"
                for index, (share, caching) in enumerate(self.mounted)
            ]
            if mounts:
                self.run(" && ".join(mounts))
            if link is not None:
                self._configure_link(link)
        except BaseException:
            self._disconnect()
            self.process.stop()
            if link is not None:
                _remove_device(link.device)
            raise

    def _configure_link(self, link: HostLink) -> None:
        self.write(
            "/etc/systemd/network/10-host-link.network",
            f"[Match]\nMACAddress={link.mac}\n\n[Network]\nAddress={link.guest_address}/{link.prefix}\n",
        )
        self.run("networkctl reload")
        deadline = time.monotonic() + 60
        while self.run(f"ping -c 1 -W 1 {link.host_address}", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise VMError(f"the VM does not reach {link.host_address} over {link.device}")

    def _connect(self) -> None:
        """One SSH connection kept open for the VM's life, every command a session over it: under emulation a new
        connection's handshake costs the guest ~1.8 s idle and, with its CPUs busy, can outlast any connect
        timeout (sshd's banner never came within 5 s on a loaded CI machine). A command made while the master
        is gone connects on its own, as before."""
        # The socket in a directory of its own, short enough for a socket's path.
        self._control_dir = Path(tempfile.mkdtemp(prefix="kubehull-ssh-"))
        self._master = processes.ManagedProcess(
            f"{self.process.name}-ssh", self._ssh_argv("-M", "-N", "-o", "ServerAliveInterval=30"), self._log_dir
        )
        check = self._ssh_argv("-O", "check")
        self._master.wait_ready(
            lambda: subprocess.run(check, capture_output=True, timeout=10).returncode == 0, 120, "multiplexing"
        )

    def _disconnect(self) -> None:
        if self._master is not None:
            self._master.stop()
        if self._control_dir is not None:
            shutil.rmtree(self._control_dir, ignore_errors=True)

    def _ssh_argv(self, *options: str) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.image.key),
            "-p",
            str(self.port),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=30",
            *(() if self._control_dir is None else ("-o", f"ControlPath={self._control_dir / 'master'}")),
            *options,
            "root@127.0.0.1",
        ]

    def _ssh(self, command: str, *, timeout: float, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        argv = [*self._ssh_argv(), command]
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as expired:  # a hung guest: a failed command that says so
            silence = f"no answer in {timeout:.0f}s".encode()
            return subprocess.CompletedProcess(argv, 255, expired.stdout or b"", silence)

    def run(
        self, command: str, *, check: bool = True, timeout: float = 300, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the VM as root; with ``check``, a non-zero exit raises with its output."""
        done = self._ssh(command, timeout=timeout, stdin=stdin)
        result = subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        )
        if check and done.returncode != 0:
            raise VMError(f"in the VM: {command}\nexit {done.returncode}\n{result.stdout}{result.stderr}")
        return result

    def journal(self, *units: str, lines: int | None = None, timeout: float = 120) -> str:
        """The units' journal (its last ``lines``), or what came back and why the rest did not (a hung guest)."""
        selection = " ".join(f"-u {shlex.quote(unit)}" for unit in units)
        last = f" -n {lines}" if lines else ""
        done = self.run(f"journalctl --no-pager {selection}{last}", check=False, timeout=timeout)
        if done.returncode:
            return f"{done.stdout}(not read: ssh exit {done.returncode}: {done.stderr.strip()})\n"
        return done.stdout

    def write(self, path: str, text: str) -> None:
        self.run(f"mkdir -p {shlex.quote(str(Path(path).parent))} && cat > {shlex.quote(path)}", stdin=text.encode())

    def console(self, lines: int = 40) -> str:
        """The last lines QEMU's serial console printed (the kernel's errors, systemd's failures)."""
        return processes.log_tail(self.process.log_path, lines)

    def shutdown(self, timeout: float = 120) -> None:
        """Power off cleanly (systemd stops every unit); QEMU is killed if it does not end in time."""
        self._ssh("systemctl poweroff", timeout=30)
        try:
            self.process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.stop()
        self._disconnect()
        if self.link is not None:
            _remove_device(self.link.device)


def _remove_device(device: str) -> None:
    subprocess.run(["ip", "link", "delete", device], capture_output=True, check=False)


def host_shares(checkout: Path) -> list[Path]:
    """What a VM shares of this machine to run the checkout's own code and tools: the checkout, the Python
    installation its virtualenv points at, the toolchain cache."""
    return [checkout, Path(sys.base_prefix), toolchain.cache_dir()]


@contextlib.contextmanager
def booted(
    work_dir: Path,
    log_dir: Path,
    checkout: Path,
    live_shares: Sequence[Path] = (),
    *,
    memory_mib: int = 4096,
    link: HostLink | None = None,
) -> Iterator[DebianVM]:
    """A VM running the checkout's code (``host_shares``), powered off at the end."""
    image = build_image(log_dir / "vm-image-build.log")
    # The VM cannot write bytecode to its read-only share, so each Python start there would compile the
    # checkout's modules again: importing hulld in the idle VM took 6.8 s with them compiled here, 8.2 s without.
    for package_root in PYTHON_PACKAGE_ROOTS:
        compileall.compile_dir(checkout / package_root, quiet=1)
    vm = DebianVM(image, work_dir, log_dir, host_shares(checkout), live_shares, memory_mib=memory_mib, link=link)
    try:
        yield vm
    finally:
        vm.shutdown()
