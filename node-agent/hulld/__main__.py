"""`hulld --config PATH`: wiring only — load the config, build the services, serve, handle signals.

SIGHUP reloads the configuration (handlers, registries, CNI directories); an invalid file is refused with a
logged reason and the running configuration stays. SIGTERM and SIGINT stop serving; containers keep running.
"""

from __future__ import annotations

import argparse
import faulthandler
import fcntl
import logging
import os
import signal
import ssl
import sys
import threading
from pathlib import Path

from prometheus_client import start_http_server

from hulld import __version__, config, errors, recovery
from hulld.containers import Containers
from hulld.cri import server
from hulld.cri.edge import Edge
from hulld.cri.image_service import ImageServicer
from hulld.cri.runtime_service import RuntimeServicer
from hulld.images.service import ImageService
from hulld.images.store import ImageStore
from hulld.metrics import Metrics
from hulld.node import confined
from hulld.sandboxes import Sandboxes
from hulld.streaming.server import StreamingServer

logger = logging.getLogger("hulld")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hulld", description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("/etc/hulld/config.toml"))
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--version", action="version", version=f"hulld {__version__}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # `kill -USR1 <hulld>` writes every thread's stack to hulld's log (as containerd dumps its goroutines).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        current = config.load(args.config)
    except config.ConfigError as error:
        print(f"hulld: invalid configuration: {error}", file=sys.stderr)
        return 2

    try:
        confined.check_supported()
    except errors.HulldError as error:
        print(f"hulld: {error}", file=sys.stderr)
        return 2
    try:
        streaming_tls = _streaming_tls(current.streaming)
    except (OSError, ssl.SSLError) as error:
        print(f"hulld: streaming.tls_cert_file / tls_key_file: {error}", file=sys.stderr)
        return 2
    # Root only: image layers and container root filesystems hold set-id binaries and device nodes of images.
    for directory in (current.storage.root, current.storage.state):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
    # Never two hulld on one state directory: the second would fight the first over every container.
    lock = (current.storage.state / "hulld.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"hulld: another hulld is running on {current.storage.state}", file=sys.stderr)
        return 3
    # Written before the socket answers: whoever sees hulld serving finds its PID (the agent signals it).
    (current.storage.state / "hulld.pid").write_text(f"{os.getpid()}\n")
    metrics = Metrics()
    if current.server.metrics_address:
        host, _, port = current.server.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host, registry=metrics.registry)
    images = ImageService(current, ImageStore(current.storage.root), metrics)
    sandboxes = Sandboxes(current)
    containers = Containers(current, sandboxes, images)
    images.in_use = containers.uses_image
    containers.on_change = lambda: count(metrics, sandboxes, containers)
    count(metrics, sandboxes, containers)
    edge = Edge(metrics, handler_of=lambda request: handler_of(request, sandboxes, containers))
    image_servicer = ImageServicer(images)
    streaming = StreamingServer(
        current.streaming.address,
        current.streaming.port,
        tls=streaming_tls,
        start_exec=lambda request, size: containers.exec(
            request.container_id, list(request.command), tty=request.tty, stdin=request.stdin, size=size
        ),
        start_attach=lambda request, size: containers.attach(
            request.container_id, stdin=request.stdin, tty=request.tty, size=size
        ),
        connect_port=lambda request, port: sandboxes.connect(request.sandbox_id, port),
        metrics=metrics,
    )
    # Signals are taken before the sockets answer: the agent signals a reload as soon as hulld serves, and a
    # SIGHUP before this point would be lost (or end the process).
    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def on_hangup(*_: object) -> None:
        reload.set()
        stop.set()

    signal.signal(signal.SIGHUP, on_hangup)
    servicers = {
        private: RuntimeServicer(current, sandboxes, containers, streaming, private=private, recovered=edge.ready)
        for private in (False, True)
    }
    grpc_servers = [
        server.serve(current.server.socket, edge, servicers[False], image_servicer, workers=32),
        server.serve(current.server.private_socket, edge, servicers[True], image_servicer, workers=4),
    ]
    recovery.recover(sandboxes, containers)  # Version and Status are served meanwhile; the rest waits
    count(metrics, sandboxes, containers)
    edge.ready.set()
    logger.info(
        "hulld %s serving CRI on %s (private: %s)", __version__, current.server.socket, current.server.private_socket
    )

    while True:
        stop.wait()
        if reload.is_set():
            reload.clear()
            stop.clear()
            try:
                fresh = config.load(args.config)
            except config.ConfigError as error:
                logger.error("configuration reload refused, keeping the running one: %s", error)
                continue
            if (fresh.server, fresh.storage) != (current.server, current.storage):
                logger.warning("server and storage settings change only at restart")
            current = fresh
            images.reconfigure(current)
            sandboxes.reconfigure(current)
            containers.reconfigure(current)
            for servicer in servicers.values():
                servicer.reconfigure(current)
            logger.info("configuration reloaded: handlers %s", ", ".join(sorted(current.handlers)))
            continue
        break
    logger.info("stopping")
    for stopped in [grpc_server.stop(grace=5) for grpc_server in grpc_servers]:
        stopped.wait()
    streaming.close()
    return 0


def handler_of(request: object, sandboxes: Sandboxes, containers: Containers) -> str:
    """The runtime handler a CRI request concerns, for the metrics' ``handler`` label."""
    if hasattr(request, "runtime_handler"):  # RunPodSandbox: none named is the default handler
        return str(getattr(request, "runtime_handler")) or sandboxes.config.runtime.default_handler  # noqa: B009
    if getattr(request, "container_id", ""):
        found = containers.records.find(str(getattr(request, "container_id")))  # noqa: B009
        return found.handler if found else ""
    if getattr(request, "pod_sandbox_id", ""):
        sandbox = sandboxes.records.find(str(getattr(request, "pod_sandbox_id")))  # noqa: B009
        return sandbox.handler if sandbox else ""
    return ""


def count(metrics: Metrics, sandboxes: Sandboxes, containers: Containers) -> None:
    """Sandboxes and containers by state and handler, for the gauges."""
    metrics.sandboxes.clear()
    metrics.containers.clear()
    for sandbox in sandboxes.records.list():
        metrics.sandboxes.labels(sandbox.status.state.lower(), sandbox.handler).inc()
    for container in containers.records.list():
        metrics.containers.labels(container.status.state.lower(), container.handler).inc()


def _streaming_tls(streaming: config.StreamingConfig) -> ssl.SSLContext | None:
    if streaming.tls_cert_file is None or streaming.tls_key_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(streaming.tls_cert_file, streaming.tls_key_file)
    return context


if __name__ == "__main__":
    sys.exit(main())
