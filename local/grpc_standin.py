"""Serve a few methods of a Google gRPC service on a free local port (stand-ins only)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc


def serve(
    service: str, methods: dict[str, tuple[Callable[..., Any], Any, Any]], port: int = 0
) -> tuple[grpc.Server, int]:
    """`methods`: name -> (handler(request, context), request type, response type), where the
    types are proto-plus messages (they bring their own serialize/deserialize)."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=req.deserialize, response_serializer=resp.serialize
        )
        for name, (fn, req, resp) in methods.items()
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound
