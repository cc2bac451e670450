"""`kubehull-uninstall`: take kubehull's handlers off every node; the chart's pre-delete hook runs it.

Only the node agents can undo what they did to a node (containerd's drop-in, and the restart that drops the
handlers; hulld's handlers), and `helm uninstall` is about to delete them. So, while they still run:

1. the operator's Deployment is scaled to 0 and its pods are waited for (it would give the handlers back);
2. every NodeHandler is deleted; each agent takes its handlers off its node and then lets the NodeHandler go
   (takes its finalizer off);
3. a node whose NodeHandlers are all gone loses its ``handler.kubehull.io/`` labels, so pods asking for those
   RuntimeClasses are no longer scheduled there.

RuntimeProfiles, their RuntimeClasses and namespace defaults stay, as the CRDs do (Helm never deletes CRDs):
pods of those RuntimeClasses stay unscheduled rather than fall back to another runtime, and a later install
puts the handlers back. A node whose agent does not let its NodeHandlers go within ``--timeout`` is named and
the command fails, so `helm uninstall` fails with it and the release stays (`helm uninstall --no-hooks` skips
this step). The hook lets go itself of the NodeHandlers of a Node that is gone, and of a node whose agent never
reported on any of its NodeHandlers (it had nothing configured); a NodeHandler not reported on yet, of a node
whose agent reports on others, is waited for: that agent may be configuring it right now.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable

from kubernetes.client.exceptions import ApiException

from kubehull_operator import kube
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
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the agents, in all")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    api = kube.Kube(kube.api_client(4), Metrics())
    try:
        uninstall(api, args.namespace, args.operator_deployment, args.operator_selector, args.timeout)
    except UninstallError as error:
        logger.error("%s", error)
        return 1
    return 0


def uninstall(api: kube.Kube, namespace: str, deployment: str, selector: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    api.scale_deployment(namespace, deployment, 0)
    while operators := api.pod_names(namespace, selector):
        if time.monotonic() > deadline:
            raise UninstallError(f"the operator's pods are still there after {timeout:.0f}s: {sorted(operators)}")
        time.sleep(POLL)
    logger.info("operator stopped; removing every node's handlers")
    listed = api.node_handlers()
    reporting = {item["spec"]["nodeName"] for item in listed if item.get("status")}  # nodes with a working agent
    unlabelled: set[str] = set()
    deleted: set[str] = set()
    while True:
        nodes = api.node_labels()
        for item in listed:
            name, node = item["metadata"]["name"], item["spec"]["nodeName"]
            if item["metadata"].get("deletionTimestamp") is None:
                if name in deleted:  # back: an operator process still runs somewhere (a lost node's)
                    logger.warning("NodeHandler %s is back; deleting it again", name)
                _ignore_gone(api.delete_node_handler, name)
                deleted.add(name)
            if node not in nodes or node not in reporting:
                _ignore_gone(api.release_node_handler, name)  # no agent to let it go
        left = {item["spec"]["nodeName"] for item in listed}
        for node, labels in sorted(nodes.items()):
            if node not in left and node not in unlabelled:
                _remove_handler_labels(api, node, labels)
                unlabelled.add(node)
                if node in reporting:
                    logger.info("node %s: handlers removed", node)
        if not listed:
            return
        if time.monotonic() > deadline:
            raise UninstallError(
                f"the agents of {len(left)} node(s) did not take their handlers off within {timeout:.0f}s, their"
                f" handlers may still be configured: {', '.join(sorted(left))}"
            )
        time.sleep(POLL)
        listed = api.node_handlers()


def _ignore_gone(request: Callable[[str], object], name: str) -> None:
    try:
        request(name)
    except ApiException as error:
        if error.status != 404:
            raise


def _remove_handler_labels(api: kube.Kube, node: str, labels: dict[str, str]) -> None:
    removed = {key: None for key in labels if key.startswith(HANDLER_LABEL_PREFIX)}
    if removed:
        api.set_node_labels(node, removed)


if __name__ == "__main__":
    sys.exit(main())
