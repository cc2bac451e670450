"""The RuntimeProfile finalizer: a profile goes only once its RuntimeClass, handler entries and labels have.

The controller does the cleanup (a deleted profile is simply no longer desired); this handler only holds the
finalizer until the cleanup shows in the cluster, retrying every second.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubehull_operator.handlers.indices import PROFILES, attach


@kopf.on.delete(*PROFILES)
async def cleanup(name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    controller = attach(memo, kwargs)
    controller.nudge()
    left = controller.cleanup_pending(name)
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        raise kopf.TemporaryError(f"waiting for the cleanup of {shown}", delay=1)
