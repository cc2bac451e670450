"""`kubehull-operator`: run the operator (leader election, metrics, kopf).

Connects like kubectl: in a pod through its service account, elsewhere through $KUBECONFIG. Every replica
serves metrics; only the one holding the lease acts.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import logging
import os
import signal
import sys
import threading
import urllib.parse

import kopf
from prometheus_client import start_http_server

from kubehull_operator import handlers, kube  # noqa: F401 - importing handlers registers them with kopf
from kubehull_operator.controller import Controller
from kubehull_operator.leader import DEFAULT_LEASE_NAME, LeaderElector
from kubehull_operator.metrics import Metrics

logger = logging.getLogger("kubehull_operator")
WRITERS = 16  # API writes in flight at once


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubehull-operator", description=__doc__)
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port (0: off)")
    parser.add_argument("--metrics-address", default="0.0.0.0", help="address to serve metrics on")  # noqa: S104
    parser.add_argument(
        "--health-endpoint", default="http://0.0.0.0:8081/healthz", help="kopf's liveness endpoint URL ('' to disable)"
    )
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="elect a leader among replicas through a Lease (default: on)",
    )
    parser.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE", ""),
        help="kubehull's own namespace, never given a namespace default (default: $POD_NAMESPACE)",
    )
    parser.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "kube-system"))
    parser.add_argument("--lease-name", default=DEFAULT_LEASE_NAME)
    parser.add_argument("--lease-duration", type=float, default=15.0, help="seconds")
    parser.add_argument("--renew-period", type=float, default=5.0, help="seconds")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf logs every handler call at INFO: one line per watch event, thousands on a large cluster.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    metrics = Metrics()
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address, registry=metrics.registry)
    # A connection per writer, the lease's, and one per watch of the controller's reflectors.
    api = kube.Kube(kube.api_client(WRITERS + 3), metrics, identity=os.environ.get("POD_NAME"))
    loop = asyncio.new_event_loop()
    # Set (from any thread) to stop kopf; kopf itself handles SIGTERM and SIGINT once it runs.
    stop_kopf: asyncio.Future[None] = loop.create_future()
    stopping = threading.Event()  # the process is on its way out: stop waiting for or renewing the lease

    elector = None
    lost = threading.Event()
    if args.leader_election:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        elector = LeaderElector(
            api,
            args.lease_namespace,
            args.lease_name,
            lease_duration=args.lease_duration,
            renew_period=args.renew_period,
            retry_period=min(2.0, args.renew_period),
        )
        standby = _serve_standby_health(args.health_endpoint) if args.health_endpoint else None
        acquired = elector.acquire(stopping)
        if standby is not None:
            standby.shutdown()
            standby.server_close()  # kopf serves the same endpoint from here on
        if not acquired:
            return 0

        def hold_lease() -> None:
            elector.hold(stopping, lost)
            if lost.is_set():
                logger.error("lost the leader lease; stopping")
                loop.call_soon_threadsafe(_resolve, stop_kopf)

        threading.Thread(target=hold_lease, name="lease", daemon=True).start()
    metrics.leader.set(1)

    controller = loop.run_until_complete(_make_controller(api, metrics, args.namespace))
    try:
        kopf.run(
            loop=loop,
            clusterwide=True,
            standalone=True,  # replicas coordinate through the Lease above, not kopf's peering
            memo=kopf.Memo(controller=controller, stop_flag=stop_kopf),
            stop_flag=stop_kopf,
            liveness_endpoint=args.health_endpoint or None,
        )
    finally:
        stopping.set()
        metrics.leader.set(0)
        if elector is not None and not lost.is_set():
            elector.release()
    return 1 if lost.is_set() else 0


class _StandbyHealth(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"standby: waiting for the leader lease\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve_standby_health(endpoint: str) -> http.server.HTTPServer:
    """A standby is healthy: answer the liveness probe until kopf (which serves it when leading) starts."""
    url = urllib.parse.urlsplit(endpoint)
    server = http.server.HTTPServer((url.hostname or "0.0.0.0", url.port or 80), _StandbyHealth)  # noqa: S104
    threading.Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    return server


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _make_controller(api: kube.Kube, metrics: Metrics, own_namespace: str) -> Controller:
    # Its asyncio primitives belong to kopf's loop.
    return Controller(api, metrics, own_namespace=own_namespace, concurrency=WRITERS)


if __name__ == "__main__":
    sys.exit(main())
