"""A grpcio servicer, written and registered exactly as for grpc.server(), served by dubbo.

Only the server object differs: dubbo.Server instead of grpc.server(...). The servicer
and greeter_pb2_grpc.py (grpcio-tools' output) are unchanged grpcio code.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # greeter_pb2_grpc
import greeter_pb2
import greeter_pb2_grpc
import grpc

import dubbo
from dubbo.configs import ServiceConfig


class Greeter(greeter_pb2_grpc.GreeterServicer):
    def sayHello(self, request, context):
        print(f"Received message from {request.name}")
        if not request.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name is required")
        token = dict(context.invocation_metadata()).get("x-token", "none")
        context.set_trailing_metadata((("x-served-by", "dubbo"),))
        return greeter_pb2.GreeterReply(message=f"hello, {request.name} (token {token})")

    def clientStream(self, request_iterator, context):
        names = [request.name for request in request_iterator]
        for name in names:
            print(f"Received message from {name}")
        return greeter_pb2.GreeterReply(message=f"hello to {len(names)} people: "
                                                f"{', '.join(names)}")

    def serverStream(self, request, context):
        print(f"Received message from {request.name}")
        for i in range(1, 4):
            yield greeter_pb2.GreeterReply(message=f"hello #{i}, {request.name}")

    def biStream(self, request_iterator, context):
        for request in request_iterator:
            print(f"Received message from {request.name}")
            yield greeter_pb2.GreeterReply(message=request.name.upper())


if __name__ == "__main__":
    # grpcio:  server = grpc.server(ThreadPoolExecutor()); server.add_insecure_port(...)
    server = dubbo.Server(ServiceConfig(host="127.0.0.1", port=50051))
    greeter_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    server.start()

    input("Press Enter to stop the server...\n")
    server.stop()
