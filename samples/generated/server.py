"""Serves hello.v1.Greeter with the servicer generated from protos/hello/v1/greeter.proto.

    ./generate.sh          # once, and after each change to the .proto
    python server.py       # then python client.py in another terminal
"""

import os
import sys
from collections.abc import Iterable, Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from hello.v1 import greeter_dubbo
from hello.v1.greeter_pb2 import HelloReply, HelloRequest

import dubbo
from dubbo.configs import ServiceConfig
from dubbo.server import ServicerContext


class Greeter(greeter_dubbo.GreeterServicer):
    """One method per rpc, named as in the .proto; a method left out answers UNIMPLEMENTED."""

    def SayHello(self, request: HelloRequest, context: ServicerContext) -> HelloReply:
        print(f"Received message from {request.name}")
        return HelloReply(message=f"hello, {request.name}")

    def SayHelloToAll(self, request_iterator: Iterator[HelloRequest],
                      context: ServicerContext) -> HelloReply:
        names = []
        for request in request_iterator:
            print(f"Received message from {request.name}")
            names.append(request.name)
        return HelloReply(message=f"hello, {' and '.join(names)}")

    def SayHelloTimes(self, request: HelloRequest,
                      context: ServicerContext) -> Iterable[HelloReply]:
        print(f"Received message from {request.name}")
        for i in range(1, 3):
            yield HelloReply(message=f"hello #{i}, {request.name}")

    def Chat(self, request_iterator: Iterator[HelloRequest],
             context: ServicerContext) -> Iterable[HelloReply]:
        for request in request_iterator:
            print(f"Received message from {request.name}")
            yield HelloReply(message=f"hello, {request.name}")


def main() -> None:
    # grpcio's form: a server, its services added before start(). (Or, in one line:
    # dubbo.Server(ServiceConfig(Greeter().service_handler(), port=50051)).)
    server = dubbo.Server(ServiceConfig(host="127.0.0.1", port=50051))
    greeter_dubbo.add_GreeterServicer_to_server(Greeter(), server)
    server.start()

    input("Press Enter to stop the server...\n")
    server.stop()


if __name__ == "__main__":
    main()
