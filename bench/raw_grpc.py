"""A bare grpc.aio server whose MeService/GetMe returns a constant: the
ceiling of this machine's gRPC stack (the counterpart of raw_asgi)."""

from __future__ import annotations

import sys
from typing import Any

import grpc
import uvloop
from observe.v1 import accounts_pb2

from core.grpc_server import GRPC_SERVER_OPTIONS

REPLY = accounts_pb2.GetMeResponse(user=accounts_pb2.User(id=1, email="bench@example.com"))


async def main(port: int) -> None:
    async def get_me(request: Any, context: Any) -> Any:
        return REPLY

    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)  # the same options as observe's server
    handler = grpc.unary_unary_rpc_method_handler(
        get_me,
        request_deserializer=accounts_pb2.GetMeRequest.FromString,
        response_serializer=accounts_pb2.GetMeResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("observe.v1.MeService", {"GetMe": handler})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
