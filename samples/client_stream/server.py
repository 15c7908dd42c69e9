"""Serves Greeter.clientStream: many requests in, one reply out (generated servicer)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
import greeter_dubbo
import greeter_pb2

import dubbo
from dubbo.configs import ServiceConfig


class Greeter(greeter_dubbo.GreeterServicer):
    def clientStream(self, request_iterator, context):
        # The iterator ends when the client half-closes; only then is the reply sent.
        names = []
        for request in request_iterator:
            print(f"Received message from {request.name}")
            names.append(request.name)
        return greeter_pb2.GreeterReply(
            message=f"hello to {len(names)} people: {', '.join(names)}"
        )


if __name__ == "__main__":
    server = dubbo.Server(ServiceConfig(Greeter().service_handler())).start()

    input("Press Enter to stop the server...\n")
    server.stop()
