"""kind clusters built offline: Debian's Docker engine, kind from its Go module, node images from Debian packages.

    with kind.run(work_dir, logs, checkout) as up: ...      # or `python -m kubehull_harness kind up`

kind's own ``build node-image`` pulls its base image and every control-plane image from the internet; here
nothing is pulled from anywhere. The pieces, each cached:

- **The Docker engine** (``Engine``): Debian's ``dockerd`` with its data under the kubehull cache (so node
  images survive a run) and its own socket. kind always asks for ``--privileged`` containers, which Docker 20.10
  turns into every capability it knows; this machine's root lacks ``CAP_SYS_RESOURCE`` and runc refuses to grant
  what it does not have. The engine's default OCI runtime is therefore ``bounded-runc``, which drops from each
  container's capability sets those outside this process's bounding set, then runs Debian's runc (newer Docker
  engines do the same for privileged containers).
- **The node image** (``node_image``): a Debian bookworm root filesystem (``mmdebstrap``; bookworm's systemd 252
  still runs on a cgroup v1 host, as this one is) with kind's own node files from its Go module (entrypoint,
  kubelet units), the toolchain's kubelet, kubeadm, kubectl and containerd, Debian's runc, conmon and CNI
  plugins. One image serves both node flavours: a node given hulld's base configuration (a file kind mounts)
  starts hulld as its CRI and never containerd; any other starts containerd.
- **The control-plane images** (``push_control_plane``): kube-apiserver, -controller-manager, -scheduler,
  kube-proxy, etcd, CoreDNS and a pause image, built from the toolchain's binaries with kubeadm's own tags and
  served by the local registry on the cluster network's gateway, which kubeadm is told is its
  ``imageRepository``.

Pods get a bridge on each node (its own /24 of the pod network, written by the harness) and routes to the
other nodes' ranges; kind's kindnetd is not used (it would be pulled).

On a cgroup v1 host (this machine) kind's entrypoint bind-mounts the kubelet's cgroup roots (``/kubelet``,
``/kubelet.slice``) onto themselves in every hierarchy, so that systemd leaves them alone until the kubelet
starts. runsc reads its own cgroups through every cgroup mount of ``/proc/self/mountinfo`` in turn and fails
on those ("Rel: can't make ../kubehull.slice/hulld.service relative to /kubelet.slice"), so once the kubelets
run, the harness removes the self-binds (``_unbind_kubelet_cgroup_roots``). kind does not make them on cgroup v2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from kubehull_agent import install
from kubehull_harness import cluster, debian, deploy, images, processes, registry, shims, toolchain, vm

PACKAGES = (
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "mount",
    "util-linux",
    "procps",
    "iproute2",
    "iptables",
    "nftables",
    "conntrack",
    "ethtool",
    "socat",
    "ca-certificates",
    "libseccomp2",
    "runc",
    "conmon",
    "containernetworking-plugins",
    "golang-github-containers-common",  # /usr/share/containers/seccomp.json: hulld's RuntimeDefault
    "busybox-static",  # hulld's pod infra container
)
NETWORK = "kubehull-kind"
SUBNET = "172.29.0.0/16"
GATEWAY = "172.29.0.1"
REGISTRY = f"{GATEWAY}:5000"
"""The local registry as the nodes reach it: a fixed port on the cluster network's own gateway address."""
K8S_REPOSITORY = f"{REGISTRY}/kubernetes"
POD_SUBNET = "10.244.0.0/16"
ENGINE_RUN = Path("/run/kubehull-docker")
CLUSTER_NAME = "kubehull"
MOUNTED_FILES = "mounted-files"  # under the work directory: the files bind-mounted into the nodes
WORKERS = ("hulld", "hulld", "containerd")
"""The workers' CRI runtimes: kind names them <cluster>-worker, -worker2, -worker3."""
CRI_LABEL = "kubehull.test/cri"
"""Each node's label naming its CRI runtime (``hulld`` or ``containerd``), for tests' node selectors."""
WORKER_LABEL = "kubehull.test/worker"
"""``"true"`` on the workers, ``"false"`` on the control plane."""
HULLD_BASE_CONFIG = cluster.HULLD_BASE_CONFIG
"""Present (mounted by kind) on hulld nodes only: what selects the node's flavour when it boots."""
HULLD_DROPIN = f"""[Unit]
ConditionPathExists={HULLD_BASE_CONFIG}

[Service]
# Lowering an OOM score needs CAP_SYS_RESOURCE, which this machine's root lacks.
OOMScoreAdjust=0
# hulld's first configuration is the base; the agent rewrites it from then on.
ExecStartPre=/bin/sh -c 'test -f {cluster.HULLD_CONFIG} || \\
  install -D -m 0644 {HULLD_BASE_CONFIG} {cluster.HULLD_CONFIG}'
"""

PAUSE_TAG = "3.10.2"  # kubeadm v1.36's
ETCD_TAG = toolchain.components()["etcd"].version.lstrip("v")
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
COREDNS_TAG = toolchain.components()["coredns"].version  # kubeadm v1.36's
PROXY_PACKAGES = ("iptables", "nftables", "conntrack")
"""kube-proxy runs the iptables tools: its image is Debian with them, not busybox."""
PAUSE_COMMAND = ("sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done")
"""The pod sandbox's process on containerd nodes: sleeps until told to stop."""

CONTAINERD_CONFIG = f"""# containerd on kubehull's kind nodes (configuration version 3).
version = 3
imports = ["/etc/containerd/conf.d/*.toml"]

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{K8S_REPOSITORY}/pause:{PAUSE_TAG}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "/etc/containerd/certs.d"

[plugins."io.containerd.cri.v1.runtime"]
  # This machine's root has no CAP_SYS_RESOURCE: containers may not get a lower OOM score than containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    # cgroupfs, as on the hulld nodes: the kind nodes share this machine's cgroup v1 hierarchy (the systemd
    # driver on cgroup v2 is what the VM tests cover).
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "/etc/cni/net.d"
"""
REGISTRY_HOSTS = f'server = "http://{REGISTRY}"\n\n[host."http://{REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n'
CONTAINERD_DROPIN = f"""[Unit]
# hulld nodes run hulld instead.
ConditionPathExists=!{HULLD_BASE_CONFIG}

[Service]
# Lowering an OOM score needs CAP_SYS_RESOURCE, which this machine's root lacks.
OOMScoreAdjust=0
"""
NODE_FILES = {
    "etc/containerd/config.toml": CONTAINERD_CONFIG,
    f"etc/containerd/certs.d/{REGISTRY}/hosts.toml": REGISTRY_HOSTS,
    "etc/systemd/system/containerd.service.d/kubehull.conf": CONTAINERD_DROPIN,
    "etc/systemd/system/hulld.service.d/kind.conf": HULLD_DROPIN,
    "etc/crictl.yaml": "runtime-endpoint: unix:///run/containerd/containerd.sock\n",
}
# kind's node files (images/base/files in its module) that the image takes as they are.
KIND_FILES = (
    "usr/local/bin/entrypoint",
    "kind/bin/mount-product-files.sh",
    "kind/bin/undo-mount-hacks.sh",
    "kind/bin/create-kubelet-cgroup-v2.sh",
    "etc/systemd/system/kubelet.service",
    "etc/systemd/system/kubelet.slice",
    "etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "etc/systemd/system/kubelet.service.d/11-kind.conf",
    "etc/systemd/system/containerd.service",
    "etc/systemd/system/undo-mount-hacks.service",
    "etc/sysctl.d/10-network-magic.conf",
    "etc/sysctl.d/10-network-security.conf",
    "etc/default/kubelet",
)
NODE_BINARIES = {
    "usr/bin/kubelet": "kubelet",
    "usr/bin/kubeadm": "kubeadm",
    "usr/bin/kubectl": "kubectl",
    "usr/local/bin/containerd": "containerd",
    "usr/local/bin/containerd-shim-runc-v2": "containerd-shim-runc-v2",
}
IMAGE_SETUP = " && ".join(
    [
        'chroot "$1" systemctl enable kubelet.service containerd.service undo-mount-hacks.service',
        # hulld's unit is mounted on hulld nodes (the agent's own, as a node image with hulld would have it).
        'ln -s /etc/systemd/system/hulld.service "$1/etc/systemd/system/multi-user.target.wants/hulld.service"',
        'chroot "$1" systemctl mask systemd-binfmt.service',
        'rm -f "$1"/lib/systemd/system/multi-user.target.wants/getty.target',
        'find "$1/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete',
        'echo ReadKMsg=no >> "$1/etc/systemd/journald.conf"',
        'mkdir -p "$1/etc/kubernetes/manifests" "$1/etc/cni/net.d" "$1/opt/cni"',
        'ln -s /usr/lib/cni "$1/opt/cni/bin"',
        'chmod 755 "$1/usr/local/bin/entrypoint" "$1"/kind/bin/*.sh',
    ]
)
# What the node image's Docker layer sets, as kind's own Dockerfile does.
IMAGE_CONFIG = 'ENV container=docker\nSTOPSIGNAL SIGRTMIN+3\nENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]\n'

BOUNDED_RUNC = """#!/usr/bin/python3
# Written by kubehull's test harness (e2e/kubehull_harness/kind.py): runc, minus the capabilities this
# machine's root cannot grant (those outside its bounding set), for Docker's --privileged containers.
import json, os, sys

RUNC = "/usr/bin/runc"
CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]


def bounding():
    for line in open("/proc/self/status"):
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return {name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1}
    return set(CAPABILITIES)


def bound(path, key):
    with open(path) as file:
        document = json.load(file)
    process = document.get(key, {}) if key else document
    allowed = bounding()
    sets = process.get("capabilities") or {}
    for name, values in sets.items():
        sets[name] = [value for value in values if value in allowed]
    with open(path, "w") as file:
        json.dump(document, file)


arguments = sys.argv[1:]
if "create" in arguments or "run" in arguments:
    bundle = arguments[arguments.index("--bundle") + 1] if "--bundle" in arguments else "."
    bound(os.path.join(bundle, "config.json"), "process")
elif "exec" in arguments and "--process" in arguments:
    bound(arguments[arguments.index("--process") + 1], None)
os.execv(RUNC, [RUNC, *arguments])
"""


class KindError(RuntimeError):
    pass


# --- the Docker engine -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Engine:
    """A ``dockerd`` of the harness's own: its images under the kubehull cache, its socket under /run."""

    process: processes.ManagedProcess

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, DOCKER_HOST=f"unix://{ENGINE_RUN / 'docker.sock'}")

    def docker(self, *args: processes.Arg, timeout: float = 600, stdin: str | None = None) -> str:
        return processes.run(["docker", *args], timeout=timeout, env=self.env, input=stdin).stdout

    def has_image(self, reference: str) -> bool:
        done = subprocess.run(["docker", "image", "inspect", reference], capture_output=True, env=self.env)
        return done.returncode == 0

    def stop(self) -> None:
        self.process.stop(grace=30)
        shutil.rmtree(ENGINE_RUN, ignore_errors=True)


def start_engine(log_dir: Path) -> Engine:
    for tool in ("dockerd", "docker", "runc"):
        if shutil.which(tool) is None:
            raise KindError(f"{tool} is not installed (Debian's docker.io; .ci/install installs it)")
    runtime = toolchain.cache_dir() / "docker-runtime" / "bounded-runc"
    runtime.parent.mkdir(parents=True, exist_ok=True)
    runtime.write_text(BOUNDED_RUNC)
    runtime.chmod(0o755)
    ENGINE_RUN.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv: list[processes.Arg] = [
        "dockerd",
        f"--data-root={toolchain.cache_dir() / 'docker'}",
        f"--exec-root={ENGINE_RUN / 'exec'}",
        f"--pidfile={ENGINE_RUN / 'docker.pid'}",
        f"--host=unix://{ENGINE_RUN / 'docker.sock'}",
        f"--add-runtime=bounded-runc={runtime}",
        "--default-runtime=bounded-runc",
        # No docker0, and no iptables rules: Docker's would set the host's FORWARD policy to DROP for every other
        # test. The nodes reach the registry and each other on the cluster network's bridge without them.
        "--bridge=none",
        "--iptables=false",
    ]
    process = processes.ManagedProcess("dockerd", argv, log_dir)
    engine = Engine(process)
    try:
        process.wait_ready(lambda: engine.docker("version", timeout=10), 60, "answering")
    except Exception:
        process.stop()
        raise
    return engine


# --- the node image ----------------------------------------------------------------------------------------


def kind_module_dir() -> Path:
    """kind's module source (for its node files), from the Go module cache the toolchain build filled."""
    version = toolchain.components()["kind"].version
    done = processes.run(["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{version}"], cwd=tempfile.gettempdir())
    return Path(json.loads(done.stdout)["Dir"])


def _recipe() -> str:
    binaries = {name: str(toolchain.binary(name)) for name in NODE_BINARIES.values()}
    return json.dumps(
        [debian.SUITE, PACKAGES, NODE_FILES, KIND_FILES, IMAGE_SETUP, IMAGE_CONFIG, binaries, "recipe 1"],
        sort_keys=True,
    )


def node_image(engine: Engine, log: Path) -> str:
    """The node image's reference, built first if the engine does not have it."""
    reference = f"kubehull/kind-node:{hashlib.sha256(_recipe().encode()).hexdigest()[:16]}"
    if engine.has_image(reference):
        return reference
    source = kind_module_dir() / "images" / "base" / "files"
    with tempfile.TemporaryDirectory(prefix="kind-node-", dir=toolchain.cache_dir()) as scratch:
        staged = Path(scratch) / "files"
        for relative in KIND_FILES:
            (staged / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / relative, staged / relative)
        for relative, text in NODE_FILES.items():
            (staged / relative).parent.mkdir(parents=True, exist_ok=True)
            (staged / relative).write_text(text)
        for relative, name in NODE_BINARIES.items():
            (staged / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(toolchain.binary(name), staged / relative)
        (staged / "kind").mkdir(exist_ok=True)
        (staged / "kind" / "version").write_text(toolchain.components()["kubeadm"].version + "\n")
        rootfs = Path(scratch) / "rootfs.tar"
        debian.bootstrap(rootfs, PACKAGES, log, variant="minbase", hooks=(f"sync-in {staged} /", IMAGE_SETUP))
        base = reference.replace("kind-node", "kind-node-rootfs")
        engine.docker("import", rootfs, base)
        context = Path(scratch) / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {base}\n{IMAGE_CONFIG}")
        processes.run(
            ["docker", "build", "--quiet", "--tag", reference, context],
            timeout=600,
            env=dict(engine.env, DOCKER_BUILDKIT="0"),
        )
        engine.docker("rmi", base)
    return reference


# --- the control-plane images ------------------------------------------------------------------------------


def _binary_layer(name: str, tar: Path) -> Path:
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as archive:
        for directory in ("usr", "usr/local", "usr/local/bin"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        archive.add(toolchain.binary(name), arcname=f"usr/local/bin/{name}")
    return tar


def _proxy_base(tar: Path, log: Path) -> Path:
    debian.bootstrap(tar, PROXY_PACKAGES, log, variant="minbase")
    return tar


def control_plane_specs(layers: Path) -> list[images.ImageSpec]:
    version = toolchain.components()["kubeadm"].version
    specs = [
        images.ImageSpec(
            repository="kubernetes/kube-proxy",
            tag=version,
            cmd=("/usr/local/bin/kube-proxy",),
            busybox=False,
            raw_layers=(layers / "proxy-base.tar", layers / "kube-proxy.tar"),
        ),
        images.ImageSpec(repository="kubernetes/etcd", tag=ETCD_TAG, cmd=("etcd",), raw_layers=(layers / "etcd.tar",)),
        images.ImageSpec(repository="kubernetes/pause", tag=PAUSE_TAG, cmd=PAUSE_COMMAND),
        # kubeadm's CoreDNS Deployment gives only arguments (-conf ...): the image names the command.
        images.ImageSpec(
            repository="kubernetes/coredns",
            tag=COREDNS_TAG,
            entrypoint=("/usr/local/bin/coredns",),
            cmd=(),
            raw_layers=(layers / "coredns.tar",),
        ),
    ]
    for name in CONTROL_PLANE:
        if name != "kube-proxy":
            specs.append(
                images.ImageSpec(
                    repository=f"kubernetes/{name}", tag=version, cmd=(name,), raw_layers=(layers / f"{name}.tar",)
                )
            )
    return specs


def push_control_plane(served: registry.Registry, work_dir: Path, log: Path) -> None:
    """Build the control-plane images (the layout is cached by recipe) and push them to ``served``."""
    recipe = json.dumps([debian.SUITE, PROXY_PACKAGES, PAUSE_COMMAND, _recipe(), ETCD_TAG, COREDNS_TAG, "recipe 2"])
    layout = toolchain.cache_dir() / "kind" / f"control-plane-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"
    layers = work_dir / "layers"
    specs = control_plane_specs(layers)
    work_dir.mkdir(parents=True, exist_ok=True)
    if not layout.is_dir():
        layers.mkdir(parents=True, exist_ok=True)
        for name in (*CONTROL_PLANE, "etcd", "coredns"):
            _binary_layer(name, layers / f"{name}.tar")
        _proxy_base(layers / "proxy-base.tar", log)
        building = layout.with_name(layout.name + ".partial")
        shutil.rmtree(building, ignore_errors=True)
        for spec in specs:
            images.build(spec, building, work_dir)
        building.rename(layout)
        shutil.rmtree(layers)
    for spec in specs:
        name = spec.repository.rsplit("/", 1)[-1]
        images.push(f"oci:{layout}:{name}-{spec.tag}", spec, served, work_dir)


# --- the cluster -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class KindCluster:
    engine: Engine
    registry: registry.Registry
    work_dir: Path
    logs: Path
    nodes: dict[str, str]
    """node name → its CRI runtime (``hulld`` or ``containerd``; the control plane's is containerd)"""

    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "kubeconfig"

    def kubectl(self, *args: processes.Arg, timeout: float = 120, stdin: str | None = None) -> str:
        command = [toolchain.binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        return processes.run(command, timeout=timeout, input=stdin).stdout

    def apply(self, manifest: str) -> str:
        return self.kubectl("apply", "-f", "-", stdin=manifest)

    def node_exec(self, node: str, *command: str, timeout: float = 120) -> str:
        return self.engine.docker("exec", node, *command, timeout=timeout)

    def save_kubehull_logs(self, name: str) -> None:
        """kubehull's pods' logs into the component logs as ``name``, before an uninstall takes them away."""
        _export_pod_logs(self.engine, self.logs / name)


def _kind(engine: Engine, *args: processes.Arg, timeout: float = 900) -> str:
    env = dict(engine.env, KIND_EXPERIMENTAL_DOCKER_NETWORK=NETWORK)
    return processes.run([toolchain.binary("kind"), *args], timeout=timeout, env=env).stdout


def _ensure_network(engine: Engine) -> None:
    found = subprocess.run(
        ["docker", "network", "inspect", NETWORK, "--format", "{{json .IPAM.Config}}"],
        capture_output=True,
        text=True,
        env=engine.env,
    )
    if found.returncode != 0:
        engine.docker("network", "create", "--driver=bridge", f"--subnet={SUBNET}", f"--gateway={GATEWAY}", NETWORK)
    elif SUBNET not in found.stdout:
        raise KindError(f"docker network {NETWORK} exists with another subnet: {found.stdout}")


def node_names() -> list[str]:
    workers = [f"{CLUSTER_NAME}-worker{index if index > 1 else ''}" for index in range(1, len(WORKERS) + 1)]
    return [f"{CLUSTER_NAME}-control-plane", *workers]


def gvisor_directory(work_dir: Path) -> Path:
    """gVisor as each node has it (runsc and its containerd shim in one directory; shims.py), made if missing."""
    directory = work_dir / "gvisor"
    if not (directory / "runsc").exists():
        shims.runsc_shim(directory)
        (directory / "runsc").symlink_to(toolchain.binary("runsc"))
    return directory


def _node_subnet(index: int) -> str:
    return f"10.244.{index}.0/24"


def _config(work_dir: Path, checkout: Path, image: str) -> dict[str, object]:
    """kind's cluster configuration: the image, kubeadm's settings, and each node's files."""
    # The checkout, its Python and the toolchain's binaries at the same paths: hulld runs from the checkout (as in
    # the VM), profiles name the toolchain's runsc, and gVisor's containerd shim starts through the harness's.
    shares = [*vm.host_shares(checkout)[:2], toolchain.cache_dir() / "bin", gvisor_directory(work_dir)]
    hulld_files = work_dir / MOUNTED_FILES / "hulld"
    hulld_files.mkdir(parents=True, exist_ok=True)
    base = cluster.hulld_base_config(
        root=Path("/var/lib/hulld"),
        pod_logs=Path("/var/log/pods"),
        cni_dir=Path("/etc/cni/net.d"),
        metrics_port=9105,
        registries=f'[[registries]]\nprefix = "{GATEWAY}"\ninsecure = true\n',
        runtime='cgroup_driver = "cgroupfs"  # this machine\'s cgroup v1 hierarchy, as the kubelet takes it',
    )
    (hulld_files / "hulld-base.toml").write_text(base)
    launcher = f"{checkout / '.venv' / 'bin' / 'python'} -m hulld"
    (hulld_files / "hulld.service").write_text(install.UNIT.format(launcher=launcher, config=cluster.HULLD_CONFIG))
    kubeadm_patches = [
        yaml.safe_dump(
            {
                "kind": "ClusterConfiguration",
                "imageRepository": K8S_REPOSITORY,
                "etcd": {"local": {"imageTag": ETCD_TAG}},
            }
        ),
        # kind's own (its nodes have their images; preflight would also refuse cgroup v1).
        yaml.safe_dump({"kind": "InitConfiguration", "skipPhases": ["preflight"]}),
        # This machine's cgroup v1: allowed explicitly since Kubernetes 1.35.
        yaml.safe_dump({"kind": "KubeletConfiguration", "failCgroupV1": False}),
    ]
    nodes: list[dict[str, object]] = []
    for index, (name, runtime) in enumerate(zip(node_names(), ["containerd", *WORKERS], strict=True)):
        conflist = work_dir / MOUNTED_FILES / "cni" / f"{name}.conflist"
        conflist.parent.mkdir(parents=True, exist_ok=True)
        conflist.write_text(cluster.cni_config(Path("/var/lib/cni-ipam"), _node_subnet(index)))
        mounts = [{"hostPath": str(conflist), "containerPath": "/etc/cni/net.d/10-kubehull.conflist", "readOnly": True}]
        mounts += [{"hostPath": str(path), "containerPath": str(path), "readOnly": True} for path in shares]
        node: dict[str, object] = {
            "role": "control-plane" if index == 0 else "worker",
            "image": image,
            "labels": {CRI_LABEL: runtime, WORKER_LABEL: str(index > 0).lower()},
        }
        if runtime == "hulld":
            mounts += [
                {"hostPath": str(hulld_files / "hulld-base.toml"), "containerPath": str(HULLD_BASE_CONFIG)},
                {"hostPath": str(hulld_files / "hulld.service"), "containerPath": str(install.UNIT_PATH)},
            ]
            join = {"kind": "JoinConfiguration", "nodeRegistration": {"criSocket": f"unix://{cluster.HULLD_SOCKET}"}}
            node["kubeadmConfigPatches"] = [yaml.safe_dump(join)]
        node["extraMounts"] = mounts
        nodes.append(node)
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": CLUSTER_NAME,
        "networking": {"disableDefaultCNI": True, "podSubnet": POD_SUBNET, "kubeProxyMode": "iptables"},
        "kubeadmConfigPatches": kubeadm_patches,
        "nodes": nodes,
    }


def _route_pod_subnets(engine: Engine) -> None:
    """Each node's route to every other node's pod range, through that node's address on the kind network."""
    names = node_names()
    addresses = {
        name: engine.docker(
            "inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}', name
        ).strip()
        for name in names
    }
    for name in names:
        for index, other in enumerate(names):
            if other != name:
                engine.docker("exec", name, "ip", "route", "replace", _node_subnet(index), "via", addresses[other])


def _unbind_kubelet_cgroup_roots(engine: Engine) -> None:
    """Each node's self-bind mounts of the kubelet's cgroup roots, removed (module docstring; none on cgroup v2)."""
    unbind = "findmnt -rn -t cgroup -o TARGET | grep -E '/kubelet(\\.slice)?$' | xargs -r -n1 umount --lazy"
    for name in node_names():
        engine.docker("exec", name, "sh", "-c", unbind)


def remove_network(engine: Engine) -> None:
    """The cluster network (and so its bridge on this machine), if it is there."""
    subprocess.run(["docker", "network", "rm", NETWORK], capture_output=True, env=engine.env, check=False)


def delete(engine: Engine) -> None:
    """The cluster's nodes, if any (a previous run's too)."""
    _kind(engine, "delete", "cluster", "--name", CLUSTER_NAME)


@contextlib.contextmanager
def run(work_dir: Path, logs: Path, checkout: Path, timeout: float = 600) -> Iterator[KindCluster]:
    work_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as teardown:
        engine = start_engine(logs)
        teardown.callback(engine.stop)
        # A killed run's cluster goes first: dockerd restarts its nodes from the engine's state, and Docker makes
        # each of their bind-mount sources that is gone (the node files, on a reused base temp) a directory.
        delete(engine)
        shutil.rmtree(work_dir / MOUNTED_FILES, ignore_errors=True)
        image = node_image(engine, logs / "kind-node-image.log")
        _ensure_network(engine)
        teardown.callback(remove_network, engine)
        served = registry.start(work_dir / "registry", logs, host=REGISTRY)
        teardown.callback(served.stop)
        push_control_plane(served, work_dir / "images", logs / "kind-images.log")
        config = work_dir / "kind.yaml"
        config.write_text(yaml.safe_dump(_config(work_dir, checkout, image), sort_keys=False))
        teardown.callback(delete, engine)
        teardown.callback(_export_logs, engine, logs)
        _kind(
            engine,
            "create",
            "cluster",
            "--config",
            config,
            "--kubeconfig",
            work_dir / "kubeconfig",
            "--wait",
            "0s",
            "--retain",
        )
        _route_pod_subnets(engine)
        runtimes = dict(zip(node_names(), ["containerd", *WORKERS], strict=True))
        up = KindCluster(engine=engine, registry=served, work_dir=work_dir, logs=logs, nodes=runtimes)
        up.kubectl("wait", "--for=condition=Ready", "node", "--all", f"--timeout={timeout:.0f}s", timeout=timeout + 30)
        _unbind_kubelet_cgroup_roots(engine)
        up.kubectl(
            "--namespace=kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            f"--timeout={timeout:.0f}s",
            timeout=timeout + 30,
        )
        yield up


def _export_logs(engine: Engine, logs: Path) -> None:
    """Each node's journal (kubelet, hulld, containerd) and kubehull's pods' logs, into the component logs."""
    _export_pod_logs(engine, logs / "kind-kubehull-pods.log")
    for name in node_names():
        journal = subprocess.run(
            ["docker", "exec", name, "journalctl", "--no-pager", "-u", "kubelet", "-u", "hulld", "-u", "containerd"],
            capture_output=True,
            text=True,
            env=engine.env,
            timeout=120,
        )
        (logs / f"kind-{name}.log").write_text(journal.stdout + journal.stderr)


def _export_pod_logs(engine: Engine, into: Path) -> None:
    """kubehull's pods' logs (every container's), into one file."""
    pods = subprocess.run(
        [
            "docker",
            "exec",
            node_names()[0],
            "kubectl",
            "--kubeconfig=/etc/kubernetes/admin.conf",
            "logs",
            f"--namespace={deploy.NAMESPACE}",
            f"--selector=app.kubernetes.io/instance={deploy.RELEASE}",
            "--all-containers",
            "--prefix",
            "--tail=-1",
            "--max-log-requests=20",
        ],
        capture_output=True,
        text=True,
        env=engine.env,
        timeout=120,
    )
    into.write_text(pods.stdout + pods.stderr)
