"""The single edge between gRPC and hulld's domain, as a server interceptor around every CRI call.

It holds calls (other than Version and Status) while hulld is still recovering its state, times and counts
every call in the metrics, logs failures, and maps hulld's domain errors to gRPC status codes. Nothing else
in hulld knows about gRPC status codes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from hulld import errors
from hulld.metrics import Metrics

logger = logging.getLogger(__name__)

CODES: dict[type[errors.HulldError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
ALWAYS_SERVED = {"Version", "Status"}


def code_of(error: BaseException) -> grpc.StatusCode:
    for kind, code in CODES.items():
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


class Edge(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics, handler_of: Callable[[Any], str]) -> None:
        self.metrics = metrics
        self.handler_of = handler_of
        self.ready = threading.Event()

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method = continuation(details)
        if method is None:
            return None
        operation = details.method.rsplit("/", 1)[-1]
        if method.unary_unary is not None:
            inner = method.unary_unary
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: self._call(operation, inner, request, context),
                request_deserializer=method.request_deserializer,
                response_serializer=method.response_serializer,
            )
        if method.unary_stream is not None:
            inner_stream = method.unary_stream
            return grpc.unary_stream_rpc_method_handler(
                lambda request, context: self._stream(operation, inner_stream, request, context),
                request_deserializer=method.request_deserializer,
                response_serializer=method.response_serializer,
            )
        return method

    def _call(self, operation: str, inner: Callable[[Any, Any], Any], request: Any, context: Any) -> Any:
        handler = self._handler(request)
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            if operation not in ALWAYS_SERVED and not self.ready.is_set():
                raise errors.Unavailable("hulld is starting: recovering its state")
            return inner(request, context)
        except Exception as error:
            code = code_of(error)
            message = str(error) if isinstance(error, errors.HulldError) else f"internal error: {error}"
            if code is grpc.StatusCode.INTERNAL:
                logger.exception("%s failed", operation)
            else:
                logger.info("%s: %s: %s", operation, code.name, message)
            self.metrics.operation_errors.labels(operation, handler, code.name).inc()
            context.abort(code, message)
        finally:
            self.metrics.operations.labels(operation, handler, code.name).inc()
            self.metrics.operation_duration.labels(operation, handler).observe(time.monotonic() - started)

    def _stream(self, operation: str, inner: Callable[[Any, Any], Any], request: Any, context: Any) -> Any:
        handler = self._handler(request)
        self.metrics.operations.labels(operation, handler, "OK").inc()
        try:
            yield from inner(request, context)
        except errors.HulldError as error:
            self.metrics.operation_errors.labels(operation, handler, code_of(error).name).inc()
            context.abort(code_of(error), str(error))

    def _handler(self, request: Any) -> str:
        try:
            return self.handler_of(request)
        except Exception:
            return ""
