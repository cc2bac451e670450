"""hulld's records of sandboxes, containers and images: kept in memory, written to disk atomically on change.

``records`` defines them (identity and configuration frozen, a separate status; versioned JSON, unknown
versions refused); ``table`` keeps one kind with its ID and name indexes, persists it, and is the only way a
status changes. Recovery (``hulld.recovery``) reads sandboxes and containers back at start-up; the image store
(``hulld.images.store``) keeps its records in a table of its own.
"""
