"""CRI streaming methods: Exec, Attach and PortForward. A call only checks the request and returns the URL of hulld's
streaming server (``hulld.streaming``) where the client then runs the command or forwards its connections."""

from __future__ import annotations

from typing import Any

from cri_api.v1 import api_pb2 as cri

from hulld import errors
from hulld.cri.scope import Scope
from hulld.streaming.portforward import PortForwardRequest
from hulld.streaming.remotecommand import AttachRequest, ExecRequest


class StreamingMethods(Scope):
    def Exec(self, request: Any, context: Any) -> Any:  # noqa: N802 - the CRI's method names
        if not request.cmd:
            raise errors.InvalidArgument("Exec: cmd is empty")
        _check_streams("Exec", request)
        record = self.containers.check_exec(self._container(request.container_id).id)
        prepared = ExecRequest(
            container_id=record.id, handler=record.handler, command=tuple(request.cmd), **_streams(request)
        )
        return cri.ExecResponse(url=self.streaming.prepare(prepared))

    def Attach(self, request: Any, context: Any) -> Any:  # noqa: N802
        _check_streams("Attach", request)
        container = self._container(request.container_id).id
        record = self.containers.check_attach(container, stdin=request.stdin, tty=request.tty)
        prepared = AttachRequest(container_id=record.id, handler=record.handler, **_streams(request))
        return cri.AttachResponse(url=self.streaming.prepare(prepared))

    def PortForward(self, request: Any, context: Any) -> Any:  # noqa: N802
        if not request.pod_sandbox_id:
            raise errors.InvalidArgument("PortForward: pod_sandbox_id is empty")
        for port in request.port:
            if not 0 < port < 65536:
                raise errors.InvalidArgument(f"PortForward: port {port} is not a TCP port (1-65535)")
        record = self.sandboxes.check_ready(self._sandbox(request.pod_sandbox_id).id)
        prepared = PortForwardRequest(sandbox_id=record.id, handler=record.handler)
        return cri.PortForwardResponse(url=self.streaming.prepare(prepared))


def _streams(request: Any) -> dict[str, bool]:
    """An ExecRequest's or AttachRequest's tty, stdin, stdout and stderr."""
    return {name: bool(getattr(request, name)) for name in ("tty", "stdin", "stdout", "stderr")}


def _check_streams(method: str, request: Any) -> None:
    """The streams an Exec or Attach asks for make sense together."""
    if request.tty and request.stderr:
        raise errors.InvalidArgument(f"{method}: tty and stderr cannot both be true (a terminal has one output)")
    if not (request.stdin or request.stdout or request.stderr):
        raise errors.InvalidArgument(f"{method}: one of stdin, stdout and stderr must be true")
