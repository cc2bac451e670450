"""`kubehull-agent`: the node agent as a process (in its DaemonSet pod, or on a host for tests and debugging).

It learns its node from --node-name (the DaemonSet passes NODE_NAME from the downward API). With
--hulld-bundle it installs hulld from that bundle and keeps it running (install.py); either way it keeps
the node's handlers (hulld's, or containerd's drop-in) in line with its NodeRuntime. --uninstall removes
containerd's drop-in and hulld (refused while hulld runs pods).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import socketserver
import sys
import threading
import urllib.request
import wsgiref.simple_server
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import tomli_w
from prometheus_client import make_wsgi_app

from kubehull_agent import containerd, install, kube, probe
from kubehull_agent.agent import CONTAINERD_RUNTIME, Agent, ContainerdNode
from kubehull_agent.host import Host, HostError
from kubehull_agent.metrics import Metrics

logger = logging.getLogger("kubehull_agent")
DEFAULT_HULLD_METRICS = "127.0.0.1:9103"  # hulld's own default (hulld/config.py)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    """A slow answer (hulld's relayed metrics) must not hold up the kubelet's health probes."""

    daemon_threads = True


def serve_http(address: str, metrics: Metrics, agent: Agent, hulld_metrics: str) -> None:
    """/metrics, /metrics/hulld (hulld's own, relayed), /healthz (the process answers) and /readyz (a status
    has been written)."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], respond: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            respond("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            ok = agent.ready.is_set()
            respond("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"no status written yet\n"]
        if path == "/metrics/hulld":
            return relay_hulld_metrics(hulld_metrics, respond)
        result: Iterable[bytes] = metrics_app(environ, respond)
        return result

    host, _, port = address.rpartition(":")

    class Quiet(wsgiref.simple_server.WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

    server = wsgiref.simple_server.make_server(
        host, int(port), app, server_class=_ThreadingWSGIServer, handler_class=Quiet
    )
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()


def relay_hulld_metrics(address: str, respond: Callable[..., Any]) -> Iterable[bytes]:
    """hulld serves its metrics on the node only (its ``server.metrics_address``, loopback by default); the
    agent, on the host network, hands them to Prometheus beside its own."""
    if not address:
        respond("404 Not Found", [("Content-Type", "text/plain")])
        return [b"hulld's metrics are off (server.metrics_address is empty)\n"]
    host, _, port = address.rpartition(":")
    url = f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}/metrics"  # noqa: S104
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read()
            content_type = response.headers.get("Content-Type", "text/plain")
    except OSError as error:
        respond("502 Bad Gateway", [("Content-Type", "text/plain")])
        return [f"hulld's metrics at {url}: {error}\n".encode()]
    respond("200 OK", [("Content-Type", content_type)])
    return [body]


def _installation(args: argparse.Namespace, bundle: Path, host: Host) -> tuple[install.Installer, install.Supervisor]:
    installer = install.Installer(bundle, args.install_root, args.install_lock)
    supervisor = install.Supervisor(
        installer.current / "bin" / "hulld",
        args.hulld_config,
        args.hulld_socket,
        args.hulld_pid_file,
        args.hulld_log,
        host,
    )
    return installer, supervisor


def _kubelet_runtime(agent: Agent) -> str:
    """What the node's kubelet reports using; "" if that cannot be read now (a new node: hulld is installed,
    as a kubelet whose CRI is hulld reports nothing until hulld runs)."""
    try:
        return agent.node_runtimes.kubelet_runtime()
    except Exception as error:
        logger.warning("cannot read this node's runtime from its Node: %s", error)
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubehull-agent", description=__doc__)
    parser.add_argument("--node-name", default=os.environ.get("NODE_NAME", ""))
    parser.add_argument(
        "--hulld-base-config",
        type=Path,
        default=Path("/etc/kubehull/hulld-base.toml"),
        help="hulld's configuration without handlers: socket, storage, network, registries",
    )
    parser.add_argument(
        "--hulld-config",
        type=Path,
        default=Path("/etc/hulld/config.toml"),
        help="the file hulld reads; the agent writes it",
    )
    parser.add_argument("--hulld-socket", type=Path, default=Path("/run/hulld/hulld.sock"))
    parser.add_argument(
        "--hulld-private-socket",
        type=Path,
        default=Path("/run/hulld/private.sock"),
        help="hulld's private socket (its server.private_socket): probes there are invisible to the kubelet",
    )
    parser.add_argument("--hulld-pid-file", type=Path, default=Path("/run/hulld/hulld.pid"))
    parser.add_argument("--probe-image", default="", help="a small image whose `true` the probes run")
    parser.add_argument(
        "--probe-logs",
        type=Path,
        default=Path("/var/log/kubehull/probes"),
        help="on a containerd node: the host directory under which each probe pod has its log directory",
    )
    parser.add_argument("--hulld-bundle", type=Path, help="install hulld from this bundle and keep it running")
    parser.add_argument(
        "--host-namespaces",
        action="store_true",
        help="the agent runs in a (privileged, hostPID) pod: start hulld in the host's namespaces and cgroups",
    )
    parser.add_argument(
        "--host-pid",
        type=int,
        default=1,
        help="with --host-namespaces: a host process whose namespaces and /proc/PID/root are the host's",
    )
    parser.add_argument(
        "--containerd-socket",
        type=Path,
        default=Path("/run/containerd/containerd.sock"),
        help="on a node whose kubelet uses containerd: its CRI socket (host path)",
    )
    parser.add_argument(
        "--containerd-dropin",
        type=Path,
        default=Path("/etc/containerd/conf.d/kubehull.toml"),
        help="the drop-in the agent writes for containerd (host path; its configuration must import it)",
    )
    parser.add_argument(
        "--containerd-restart",
        default="systemctl restart containerd",
        help="the command that restarts containerd, run in the host's namespaces when its drop-in changed",
    )
    parser.add_argument("--install-root", type=Path, default=Path("/opt/kubehull"))
    parser.add_argument("--install-lock", type=Path, default=Path("/run/kubehull/install.lock"))
    parser.add_argument("--hulld-log", type=Path, default=Path("/var/log/kubehull/hulld.log"))
    parser.add_argument(
        "--uninstall",
        action="store_true",
        help="remove containerd's drop-in (restarting containerd), stop and remove hulld (not while it runs pods)",
    )
    parser.add_argument("--reprobe-interval", type=float, default=300.0, help="seconds")
    parser.add_argument("--http-address", default="0.0.0.0:9104", help="/metrics, /healthz, /readyz")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = Metrics()
    host = Host(from_pod=args.host_namespaces, pid=args.host_pid)
    dropin = containerd.DropIn(args.containerd_dropin, shlex.split(args.containerd_restart), host, args.install_lock)
    if args.uninstall:
        try:
            # A containerd node's handlers go with the drop-in (running pods keep their shims); no drop-in, no
            # restart.
            if dropin.apply("", {}, loaded=lambda: True):
                print(f"removed {args.containerd_dropin}; containerd restarted")
            install.uninstall(*_installation(args, args.install_root / "hulld", host))
        except (install.InstallError, HostError, containerd.ContainerdError) as error:
            print(f"kubehull-agent: {error}", file=sys.stderr)
            return 1
        print("hulld uninstalled")
        return 0
    if not args.node_name or not args.probe_image:
        print("kubehull-agent: --node-name (or NODE_NAME) and --probe-image are required", file=sys.stderr)
        return 2
    containerd_node = ContainerdNode(
        dropin=dropin,
        prober=probe.Prober(
            host.path(args.containerd_socket), args.probe_image, host, args.probe_logs, probe.PROBE_SLICE
        ),
    )
    agent = Agent(
        node_runtimes=kube.NodeRuntimes(kube.api_client(), args.node_name),
        prober=probe.Prober(args.hulld_private_socket, args.probe_image, host),
        containerd_node=containerd_node,
        metrics=metrics,
        base_config=args.hulld_base_config,
        hulld_config=args.hulld_config,
        hulld_pid_file=args.hulld_pid_file,
        host_runs_systemd=host.path("/run/systemd/system").is_dir(),  # sd_booted(3)
        reprobe_interval=args.reprobe_interval,
    )
    hulld_metrics = str((agent.base or {}).get("server", {}).get("metrics_address", DEFAULT_HULLD_METRICS))
    serve_http(args.http_address, metrics, agent, hulld_metrics)  # healthy (alive) while hulld is set up
    if args.hulld_bundle is not None and _kubelet_runtime(agent).startswith(CONTAINERD_RUNTIME):
        logger.info("this node's kubelet uses containerd: hulld is not installed, containerd is configured")
    elif args.hulld_bundle is not None:
        if agent.base is None:
            print(f"kubehull-agent: hulld's base configuration {args.hulld_base_config} is missing", file=sys.stderr)
            return 1
        installer, supervisor = _installation(args, args.hulld_bundle, host)
        version = install.bundle_version(args.hulld_bundle)
        try:
            if installer.ensure():
                metrics.lifecycle.labels("installed").inc()
            if not args.hulld_config.exists():
                args.hulld_config.write_text(tomli_w.dumps(agent.base))
            action = supervisor.ensure(version)
        except (install.InstallError, HostError) as error:
            print(f"kubehull-agent: {error}", file=sys.stderr)
            return 1
        metrics.lifecycle.labels(action).inc()
        logger.info("hulld %s: %s", version, action)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = threading.Thread(target=agent.run, args=(stop,), name="node-loop", daemon=True)
    worker.start()
    stop.wait()
    logger.info("stopping; hulld keeps running")
    # The node loop may be inside a watch or a CRI call: finalizing the interpreter under it can abort in gRPC's
    # C core (the agent then exits by SIGABRT; seen in CI). Nothing is left to tear down (hulld keeps running,
    # every file the loop writes is replaced whole), so the agent leaves without the interpreter's finalization.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
