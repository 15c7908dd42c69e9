"""Serves Greeter.sayHello: one request in, one reply out.

The servicer class and its types come from greeter_dubbo.py, which
`python -m dubbo.protoc` generated from ../proto/greeter.proto (see ../proto/generate.sh).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
import greeter_dubbo
import greeter_pb2

import dubbo
from dubbo.configs import ServiceConfig


class Greeter(greeter_dubbo.GreeterServicer):
    # Methods not overridden (clientStream, ...) answer UNIMPLEMENTED.
    def sayHello(self, request, context):
        print(f"Received message from {request.name}")
        return greeter_pb2.GreeterReply(message=f"hello, {request.name}")


if __name__ == "__main__":
    # service_handler(): the service with its name, methods and (de)serializers
    service_config = ServiceConfig(Greeter().service_handler())

    # start the server
    server = dubbo.Server(service_config).start()

    input("Press Enter to stop the server...\n")
    server.stop()
