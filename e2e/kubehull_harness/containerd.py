"""containerd 2.x (the toolchain's) as tests and benchmarks run it: its configuration (version 3), rooted in a
work directory, pulling from the local registry over plain http, pods on a given CNI configuration."""

from __future__ import annotations

from pathlib import Path

IMAGES_PLUGIN = 'plugins."io.containerd.cri.v1.images"'
RUNTIME_PLUGIN = 'plugins."io.containerd.cri.v1.runtime"'


def write_config(work: Path, registry_host: str, cni_dir: Path, *, imports: str = "", runtimes: str = "") -> Path:
    """Write the configuration (``work/containerd.toml``, returned) of a containerd whose root, state, registry
    settings and socket (``containerd.sock``) are in ``work``. ``imports``: a glob of drop-ins it imports;
    ``runtimes``: TOML under its CRI runtime plugin's table (the ``.containerd`` table and below)."""
    hosts = work / "hosts" / registry_host
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(
        f'server = "http://{registry_host}"\n[host."http://{registry_host}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    config = work / "containerd.toml"
    config.write_text(f"""
version = 3
{f'imports = ["{imports}"]' if imports else ""}
root = "{work}/root"
state = "{work}/state"
[grpc]
  address = "{work}/containerd.sock"
[{IMAGES_PLUGIN}]
  [{IMAGES_PLUGIN}.pinned_images]
    sandbox = "{registry_host}/pause:3.9"
  [{IMAGES_PLUGIN}.registry]
    config_path = "{work / "hosts"}"
[{RUNTIME_PLUGIN}]
  restrict_oom_score_adj = true
  [{RUNTIME_PLUGIN}.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni_dir}"
{runtimes}""")
    return config
