"""`kubehull-uninstall`: take kubehull's handlers off every node; the chart's pre-delete hook runs it.

Only the node agents can undo what they did to a node (containerd's drop-in, and the restart that drops the
handlers; hulld's handlers), and `helm uninstall` is about to delete them. So, while they still run:

1. the operator's Deployment is scaled to 0 and its pods are waited for (it would give the handlers back);
2. the operators' leader lease is taken and held to the end, so that no operator acts meanwhile: while one run
   outside the cluster (``operator.replicas=0``) still leads, the lease is not free, and the command fails
   naming its holder before anything is changed;
3. every NodeRuntime's handlers are emptied, and each agent removes them from its node and reports that;
4. a node whose agent has reported loses its ``handler.kubehull.io/`` labels, so pods asking for those
   RuntimeClasses are no longer scheduled there.

RuntimeProfiles, their RuntimeClasses and namespace defaults stay, as the CRDs do (Helm never deletes CRDs):
pods of those RuntimeClasses stay unscheduled rather than fall back to another runtime, and a later install
puts the handlers back. A node whose agent does not report within ``--timeout`` is named and the command fails,
so `helm uninstall` fails with it and the release stays (`helm uninstall --no-hooks` skips this step). A node
whose agent never reported anything had nothing configured, and is not waited for.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from kubehull_operator import kube
from kubehull_operator.leader import DEFAULT_LEASE_NAME, LeaderElector
from kubehull_operator.metrics import Metrics
from kubehull_operator.reconcile.model import HANDLER_LABEL_PREFIX

logger = logging.getLogger("kubehull_operator.uninstall")
POLL = 2.0


class UninstallError(RuntimeError):
    pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubehull-uninstall", description=__doc__)
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", ""), help="kubehull's namespace")
    parser.add_argument("--operator-deployment", required=True, help="the operator's Deployment in --namespace")
    parser.add_argument("--operator-selector", required=True, help="label selector of the operator's pods")
    parser.add_argument("--lease-namespace", help="the operators' leader lease's namespace (default: --namespace)")
    parser.add_argument("--lease-name", default=DEFAULT_LEASE_NAME, help="the operators' leader lease")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the agents, in all")
    args = parser.parse_args(argv)
    args.lease_namespace = args.lease_namespace or args.namespace
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    api = kube.Kube(kube.api_client(4), Metrics())
    try:
        lease = (args.lease_namespace, args.lease_name)
        uninstall(api, args.namespace, args.operator_deployment, args.operator_selector, lease, args.timeout)
    except UninstallError as error:
        logger.error("%s", error)
        return 1
    return 0


def uninstall(
    api: kube.Kube, namespace: str, deployment: str, selector: str, lease: tuple[str, str], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    api.scale_deployment(namespace, deployment, 0)
    while operators := api.pod_names(namespace, selector):
        if time.monotonic() > deadline:
            raise UninstallError(f"the operator's pods are still there after {timeout:.0f}s: {sorted(operators)}")
        time.sleep(POLL)
    with _leading(api, *lease, deadline) as lost:
        logger.info("operator stopped and its lease held; removing every node's handlers")
        _remove_handlers(api, deadline, timeout, lost)


@contextlib.contextmanager
def _leading(api: kube.Kube, namespace: str, name: str, deadline: float) -> Iterator[threading.Event]:
    """Hold the operators' leader lease inside the block (renewed; released after), as the operator would, so
    that no operator acts meanwhile. The event is set if the lease is lost. An operator still leading keeps it
    from being taken: the command fails, naming the lease's holder."""
    elector = LeaderElector(api, namespace, name)
    given_up = threading.Event()
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), given_up.set)
    timer.start()
    try:
        acquired = elector.acquire(given_up)
    finally:
        timer.cancel()
    if not acquired:
        holder = ((api.read_lease(namespace, name) or {}).get("spec") or {}).get("holderIdentity")
        if not holder:
            raise UninstallError(f"could not take the operators' lease {namespace}/{name} (the errors above say why)")
        raise UninstallError(
            f"an operator still leads through the lease {namespace}/{name} (held by {holder}), though the"
            " release's operator pods are gone: one runs outside the cluster; stop it, then uninstall again"
        )
    stop, lost = threading.Event(), threading.Event()
    renewing = threading.Thread(target=elector.hold, args=(stop, lost), name="lease", daemon=True)
    renewing.start()
    try:
        yield lost
    finally:
        stop.set()
        renewing.join()
        if not lost.is_set():
            elector.release()


def _remove_handlers(api: kube.Kube, deadline: float, timeout: float, lost: threading.Event) -> None:
    # Nodes whose agent runs (or ran): it has reported a status.
    waiting = {item["metadata"]["name"] for item in api.node_runtimes() if item.get("status") is not None}
    emptied: set[str] = set()
    while True:
        if lost.is_set():
            raise UninstallError("lost the operators' leader lease: an operator took it and may give handlers back")
        listed = api.node_runtimes()
        for item in listed:
            name = item["metadata"]["name"]
            if item["spec"].get("handlers"):
                if name in emptied:  # given back: an operator process still runs somewhere (a lost node's)
                    logger.warning("NodeRuntime %s has handlers again; emptying it again", name)
                api.set_node_runtime_handlers(name, ())
                emptied.add(name)
        reported = waiting & {item["metadata"]["name"] for item in listed if _emptied(item)}
        labels = api.node_labels() if reported else {}
        for name in sorted(reported):
            _remove_handler_labels(api, name, labels.get(name, {}))
            logger.info("node %s: handlers removed", name)
        waiting -= reported
        if not waiting:
            break
        if time.monotonic() > deadline:
            raise UninstallError(
                f"no report from the agents of {len(waiting)} node(s) within {timeout:.0f}s, their handlers may"
                f" still be configured: {', '.join(sorted(waiting))}"
            )
        time.sleep(POLL)
    for name, node_labels in api.node_labels().items():  # nodes without a NodeRuntime (any more) too
        _remove_handler_labels(api, name, node_labels)


def _emptied(item: dict[str, Any]) -> bool:
    """Whether the node's agent has reported the empty spec: no handler left on the node."""
    status = item.get("status") or {}
    return status.get("observedGeneration") == item["metadata"]["generation"] and not status.get("handlers")


def _remove_handler_labels(api: kube.Kube, node: str, labels: dict[str, str]) -> None:
    removed = {key: None for key in labels if key.startswith(HANDLER_LABEL_PREFIX)}
    if removed:
        api.set_node_labels(node, removed)


if __name__ == "__main__":
    sys.exit(main())
