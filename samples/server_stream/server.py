"""Serves Greeter.serverStream: one request in, many replies out."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
import greeter_pb2

import dubbo
from dubbo.configs import ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler


def server_stream(request):
    # Each yielded reply is sent as soon as it is produced; returning ends the call.
    print(f"Received message from {request.name}")
    for i in range(1, 4):
        yield greeter_pb2.GreeterReply(message=f"hello #{i}, {request.name}")


if __name__ == "__main__":
    # build a method handler
    method_handler = RpcMethodHandler.server_stream(
        server_stream,
        request_deserializer=greeter_pb2.GreeterRequest.FromString,
        response_serializer=greeter_pb2.GreeterReply.SerializeToString,
    )
    # build a service handler
    service_handler = RpcServiceHandler(
        service_name="org.apache.dubbo.samples.proto.Greeter",
        method_handlers={"serverStream": method_handler},
    )

    service_config = ServiceConfig(service_handler)

    # start the server
    server = dubbo.Server(service_config).start()

    input("Press Enter to stop the server...\n")
    server.stop()
