"""One process, all four Triple call kinds.

Starts a Greeter server on a free port, calls each of its four methods once through a
client and prints what went out and what came back, then shuts both down:

    python samples/demo.py
"""

import os
import queue
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "proto"))
import greeter_dubbo  # generated from proto/greeter.proto by python -m dubbo.protoc
import greeter_pb2

import dubbo
from dubbo import RpcError
from dubbo.configs import ReferenceConfig, ServiceConfig

SERVICE_NAME = "org.apache.dubbo.samples.proto.Greeter"
TIMEOUT = 10  # seconds; every call below gives up after this instead of hanging


# --- server side: one method per call kind ---------------------------------------------


class Greeter(greeter_dubbo.GreeterServicer):
    def sayHello(self, request, context):
        return greeter_pb2.GreeterReply(message=f"hello, {request.name}")

    def clientStream(self, request_iterator, context):
        names = [request.name for request in request_iterator]
        return greeter_pb2.GreeterReply(
            message=f"hello to {len(names)} people: {', '.join(names)}"
        )

    def serverStream(self, request, context):
        for i in range(1, 4):
            yield greeter_pb2.GreeterReply(message=f"hello #{i}, {request.name}")

    def biStream(self, request_iterator, context):
        for request in request_iterator:
            yield greeter_pb2.GreeterReply(message=f"hello, {request.name}")


# --- client side: the generated stub, one method per rpc ---------------------------------


def call_all_kinds(client):
    stub = greeter_dubbo.GreeterStub(client)
    request = greeter_pb2.GreeterRequest

    print("unary (sayHello): one request, one reply")
    reply = stub.sayHello(request(name="dubbo"), timeout=TIMEOUT)
    print(f"  sent     'dubbo'\n  received {reply.message!r}")

    print("client stream (clientStream): many requests, one reply")
    names = ["alice", "bob", "carol"]
    reply = stub.clientStream((request(name=name) for name in names), timeout=TIMEOUT)
    print(f"  sent     {names}\n  received {reply.message!r}")

    print("server stream (serverStream): one request, many replies")
    print("  sent     'dubbo'")
    for reply in stub.serverStream(request(name="dubbo"), timeout=TIMEOUT):
        print(f"  received {reply.message!r}")

    print("bidi stream (biStream): requests and replies interleaved")
    # Each request is produced only after the reply to the previous one has arrived, so
    # this conversation works only because the client sends requests while the caller
    # reads replies.
    answered = queue.Queue()

    def conversation():
        for name in ["alice", "bob", "carol"]:
            print(f"  sent     {name!r}")
            yield request(name=name)
            answered.get(timeout=TIMEOUT)

    for reply in stub.biStream(conversation(), timeout=TIMEOUT):
        print(f"  received {reply.message!r}")
        answered.put(reply)

    print("errors: a method the server does not have")
    try:
        # Without generated code a method is named by a string and carries bytes.
        client.unary("noSuchMethod")(b"", timeout=TIMEOUT)
    except RpcError as error:
        print(f"  RpcError {error.code.name}: {error.details}")


def main():
    # port=0 lets the OS pick a free port; server.port tells which one it chose.
    with dubbo.Server(ServiceConfig(Greeter().service_handler(), port=0)) as server:
        url = f"tri://127.0.0.1:{server.port}/{SERVICE_NAME}"
        print(f"server listening, calling {url}\n")
        with dubbo.Client(ReferenceConfig.from_url(url)) as client:
            call_all_kinds(client)
    print("\nclient closed, server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
