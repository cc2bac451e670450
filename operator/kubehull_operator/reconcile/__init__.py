"""Pure reconciliation: a snapshot of the cluster in, the actions that bring it to the desired state out.

Nothing in this package talks to the API or keeps state; ``plan.plan(snapshot, now)`` is the operator's whole
decision, testable without a cluster. ``controller`` takes snapshots and applies the actions through ``kube``.
"""
