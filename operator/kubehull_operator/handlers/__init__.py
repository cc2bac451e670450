"""kopf handlers: thin, one concern each. Importing this package registers them with kopf.

- ``indices``: keep every watched kind in kopf indices and nudge the controller on any change;
- ``profiles``: the RuntimeProfile finalizer (deletion waits until its cleanup is done);
- ``lifecycle``: kopf settings at start-up, the controller's start and stop.
"""

from kubehull_operator.handlers import indices, lifecycle, profiles

__all__ = ["indices", "lifecycle", "profiles"]
