"""Waiting for a real component to get somewhere: one polling helper for every test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from kubernetes.client.exceptions import ApiException

from kubehull_harness.processes import ProcessError

T = TypeVar("T")
# What "not there yet" looks like: a failed assertion, a missing key, a 404, a refused connection, a failed kubectl.
NOT_YET = (AssertionError, ApiException, KeyError, TypeError, OSError, ProcessError)


def wait_until(check: Callable[[], T | None], timeout: float = 20, what: str = "condition", interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy, and return that; its "not yet" errors count as falsy."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except NOT_YET as error:
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)
