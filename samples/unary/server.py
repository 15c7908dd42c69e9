"""Serves Greeter.sayHello: one request in, one reply out."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
import greeter_pb2

import dubbo
from dubbo.configs import ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler


def say_hello(request):
    print(f"Received message from {request.name}")
    return greeter_pb2.GreeterReply(message=f"hello, {request.name}")


if __name__ == "__main__":
    # build a method handler
    method_handler = RpcMethodHandler.unary(
        say_hello,
        method_name="sayHello",
        request_deserializer=greeter_pb2.GreeterRequest.FromString,
        response_serializer=greeter_pb2.GreeterReply.SerializeToString,
    )
    # build a service handler
    service_handler = RpcServiceHandler(
        service_name="org.apache.dubbo.samples.proto.Greeter",
        method_handlers={"sayHello": method_handler},
    )

    service_config = ServiceConfig(service_handler)

    # start the server
    server = dubbo.Server(service_config).start()

    input("Press Enter to stop the server...\n")
    server.stop()
