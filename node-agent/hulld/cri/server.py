"""A gRPC server on one of hulld's unix sockets: root-only socket in a root-only directory."""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2_grpc

from hulld.cri.edge import Edge
from hulld.cri.image_service import ImageServicer
from hulld.cri.runtime_service import RuntimeServicer

MAX_MESSAGE = 16 * 1024 * 1024  # the kubelet's own limit


def serve(socket: Path, edge: Edge, runtime: RuntimeServicer, images: ImageServicer, *, workers: int) -> grpc.Server:
    socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(socket.parent, 0o700)
    socket.unlink(missing_ok=True)
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cri"),
        interceptors=[edge],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)],
    )
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(runtime, server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(images, server)
    previous = os.umask(0o177)  # the socket is born 0600: no window in which others could connect
    try:
        server.add_insecure_port(f"unix://{socket}")
        server.start()
    finally:
        os.umask(previous)
    os.chmod(socket, 0o600)
    return server
