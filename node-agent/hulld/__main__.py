"""`hulld --config PATH`: wiring only — load the config, build the services, serve, handle signals.

SIGHUP reloads the configuration (handlers, registries, CNI directories); an invalid file is refused with a
logged reason and the running configuration stays. SIGTERM and SIGINT stop serving; containers keep running.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from prometheus_client import start_http_server

from hulld import __version__, config
from hulld.cri import server
from hulld.cri.edge import Edge
from hulld.cri.image_service import ImageServicer
from hulld.cri.runtime_service import RuntimeServicer
from hulld.images.service import ImageService
from hulld.images.store import ImageStore
from hulld.metrics import Metrics

logger = logging.getLogger("hulld")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hulld", description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("/etc/hulld/config.toml"))
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--version", action="version", version=f"hulld {__version__}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        current = config.load(args.config)
    except config.ConfigError as error:
        print(f"hulld: invalid configuration: {error}", file=sys.stderr)
        return 2

    metrics = Metrics()
    if current.server.metrics_address:
        host, _, port = current.server.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host, registry=metrics.registry)
    images = ImageService(current, ImageStore(current.storage.root), metrics)
    runtime = RuntimeServicer(current)
    edge = Edge(metrics, handler_of=lambda request: getattr(request, "runtime_handler", "") or "")
    grpc_server = server.serve(current.server.socket, edge, runtime, ImageServicer(images))
    edge.ready.set()
    logger.info("hulld %s serving CRI on %s", __version__, current.server.socket)

    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def on_hangup(*_: object) -> None:
        reload.set()
        stop.set()

    signal.signal(signal.SIGHUP, on_hangup)
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
            runtime.reconfigure(current)
            logger.info("configuration reloaded: handlers %s", ", ".join(sorted(current.handlers)))
            continue
        break
    logger.info("stopping")
    grpc_server.stop(grace=5).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
