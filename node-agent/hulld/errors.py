"""hulld's domain errors. Code inside hulld raises these; only ``cri.edge`` turns them into gRPC statuses."""

from __future__ import annotations


class HulldError(Exception):
    """Base of every error hulld reports to its clients; the message is shown to them as it is."""


class NotFound(HulldError):
    pass


class AlreadyExists(HulldError):
    pass


class InvalidArgument(HulldError):
    pass


class FailedPrecondition(HulldError):
    pass


class Unimplemented(HulldError):
    pass


class DeadlineExceeded(HulldError):
    """The operation ran out of the time the client gave it (an ExecSync timeout)."""


class Unavailable(HulldError):
    """A dependency (a registry, a runtime binary) could not be reached; the client may retry."""


class ResourceExhausted(HulldError):
    """Too many of something at once (streaming requests waiting for their client); the client may retry."""
