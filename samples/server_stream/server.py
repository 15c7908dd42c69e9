"""Serves Greeter.serverStream: one request in, many replies out (generated servicer,
added grpcio-style with add_GreeterServicer_to_server)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
import greeter_dubbo
import greeter_pb2

import dubbo
from dubbo.configs import ServiceConfig


class Greeter(greeter_dubbo.GreeterServicer):
    def serverStream(self, request, context):
        # Each yielded reply is sent as soon as it is produced; returning ends the call.
        print(f"Received message from {request.name}")
        for i in range(1, 4):
            yield greeter_pb2.GreeterReply(message=f"hello #{i}, {request.name}")


if __name__ == "__main__":
    # A config without a service: the services are added to the server before start().
    server = dubbo.Server(ServiceConfig())
    greeter_dubbo.add_GreeterServicer_to_server(Greeter(), server)
    server.start()

    input("Press Enter to stop the server...\n")
    server.stop()
