"""The CRI surface: gRPC servicers that translate requests into calls on hulld's domain, and the one edge.

``edge`` wraps every call (readiness, logging, metrics, domain error → gRPC status); ``runtime_service``
composes the RuntimeService from one module per method group (``runtime_info``, ``sandbox``, ``container``,
``events``, ``stats``, ``unsupported``, over ``scope``), ``convert`` turns records into CRI messages,
``image_service`` holds the ImageService; ``server`` binds them to a unix socket.
"""
