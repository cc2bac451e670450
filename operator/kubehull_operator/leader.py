"""Leader election over a coordination.k8s.io Lease, so two operator replicas never act at once.

The algorithm is client-go's: a candidate takes the lease when it is free, released, or has not been renewed
for its whole duration as measured on the candidate's own clock (from when it last saw the lease change, so
clock skew between replicas does not matter). The leader renews it every ``renew_period``; if it cannot renew
within ``lease_duration`` it has lost, and the process stops acting. On a clean shutdown it releases the lease
so a standby takes over at once.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubehull_operator.kube import Kube

logger = logging.getLogger(__name__)
DEFAULT_LEASE_NAME = "kubehull-operator"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        *,
        lease_duration: float = 15.0,
        renew_period: float = 5.0,
        retry_period: float = 2.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = kube.identity
        self.lease_duration = lease_duration
        self.renew_period = renew_period
        self.retry_period = retry_period
        self._observed: tuple[Any, float] | None = None  # (lease spec, monotonic time first seen)

    def _try(self) -> bool:
        """One attempt to acquire or renew; True if this replica holds the lease afterwards."""
        lease = self.kube.read_lease(self.namespace, self.name)
        spec = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if lease is not None and holder and holder != self.identity:
            if self._observed is None or self._observed[0] != spec:
                self._observed = (spec, time.monotonic())
            if time.monotonic() - self._observed[1] < float(spec.get("leaseDurationSeconds") or self.lease_duration):
                return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": (lease or {}).get("metadata", {}).get("resourceVersion"),
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration),
                "acquireTime": spec.get("acquireTime") if holder == self.identity else _now(),
                "renewTime": _now(),
                "leaseTransitions": transitions if lease is not None else 0,
            },
        }
        try:
            self.kube.write_lease(self.namespace, body)
        except ApiException as error:
            if error.status == 409:  # someone else wrote it first
                return False
            raise
        return True

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this replica leads (True) or ``stop`` is set (False)."""
        logger.info("waiting to lead (lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        while not stop.is_set():
            try:
                if self._try():
                    logger.info("became the leader")
                    return True
            except Exception:
                logger.exception("leader election attempt failed")
            stop.wait(self.retry_period)
        return False

    def hold(self, stop: threading.Event, lost: threading.Event) -> None:
        """Renew until ``stop``; set ``lost`` (and return) if renewal fails for a whole lease duration."""
        last_renewed = time.monotonic()
        while not stop.wait(self.renew_period):
            try:
                if self._try():
                    last_renewed = time.monotonic()
                    continue
                logger.error("another replica took the lease")
            except Exception:
                logger.exception("lease renewal failed")
                if time.monotonic() - last_renewed < self.lease_duration:
                    continue
            lost.set()
            return

    def release(self) -> None:
        try:
            lease = self.kube.read_lease(self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["renewTime"] = _now()
            self.kube.write_lease(self.namespace, lease)
            logger.info("released the lease")
        except Exception:
            logger.exception("could not release the lease")
