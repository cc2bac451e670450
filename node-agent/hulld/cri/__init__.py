"""The CRI surface: gRPC servicers that translate requests into calls on hulld's domain, and the one edge.

``edge`` wraps every call (readiness, logging, metrics, domain error → gRPC status); ``runtime_service`` and
``image_service`` hold one thin method per RPC; ``server`` binds them to the unix socket.
"""
