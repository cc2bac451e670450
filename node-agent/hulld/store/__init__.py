"""Sandbox and container records: kept in memory, written to disk atomically on every change.

``records`` defines them (versioned JSON, unknown versions refused); ``table`` keeps one kind of record with
its ID and name indexes and persists them. Recovery (``hulld.recovery``) reads them back at start-up.
"""
