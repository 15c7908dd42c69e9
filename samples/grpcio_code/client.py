"""grpcio client code (greeter_pb2_grpc.GreeterStub) over dubbo.Channel.

dubbo.Channel(target) stands where grpc.insecure_channel(target) stood; the rest is
grpcio code as written for grpcio: the stub, with_call, future, metadata, timeouts and
`except grpc.RpcError as e: e.code()`. Run with --grpcio to use grpc.insecure_channel
instead: the output is the same.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # greeter_pb2_grpc
import greeter_pb2
import greeter_pb2_grpc
import grpc

import dubbo


def run(channel):
    stub = greeter_pb2_grpc.GreeterStub(channel)
    request = greeter_pb2.GreeterRequest

    reply = stub.sayHello(request(name="dubbo-python"), timeout=5)
    print(f"Received response: {reply.message}")

    reply, call = stub.sayHello.with_call(request(name="with-call"),
                                          metadata=(("x-token", "secret"),))
    print(f"Received response: {reply.message}")
    print(f"status {call.code().name}, trailing metadata {dict(call.trailing_metadata())}")

    future = stub.sayHello.future(request(name="future"))
    print(f"Received response: {future.result(timeout=5).message}")

    names = iter([request(name="alice"), request(name="bob")])
    print(f"Received response: {stub.clientStream(names).message}")

    for reply in stub.serverStream(request(name="stream")):
        print(f"Received response: {reply.message}")

    for reply in stub.biStream(iter([request(name="ping"), request(name="pong")])):
        print(f"Received response: {reply.message}")

    try:
        stub.sayHello(request(name=""))
    except grpc.RpcError as e:
        print(f"Error: {e.code().name}: {e.details()}")


if __name__ == "__main__":
    target = "127.0.0.1:50051"
    if "--grpcio" in sys.argv:
        with grpc.insecure_channel(target) as channel:
            run(channel)
    else:
        with dubbo.Channel(target) as channel:  # grpc.insecure_channel(target)
            run(channel)
