"""Calls server.py through the stub generated from protos/hello/v1/greeter.proto.

Every call is typed: mypy --strict knows that SayHello takes a HelloRequest and returns
a HelloReply, and that SayHelloTimes returns an iterator of HelloReply.
"""

import os
import sys
from collections.abc import Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from hello.v1 import greeter_dubbo
from hello.v1.greeter_pb2 import HelloReply, HelloRequest

import dubbo
from dubbo.configs import ReferenceConfig

TIMEOUT = 10  # seconds


def requests(*names: str) -> Iterator[HelloRequest]:
    for name in names:
        yield HelloRequest(name=name)


def main() -> None:
    reference = ReferenceConfig.from_url("tri://127.0.0.1:50051/hello.v1.Greeter")
    with dubbo.Client(reference) as client:
        stub = greeter_dubbo.GreeterStub(client)

        reply: HelloReply = stub.SayHello(HelloRequest(name="dubbo-python"), timeout=TIMEOUT)
        print(f"Received response: {reply.message}")

        reply = stub.SayHelloToAll(requests("alice", "bob"), timeout=TIMEOUT)
        print(f"Received response: {reply.message}")

        for reply in stub.SayHelloTimes(HelloRequest(name="carol"), timeout=TIMEOUT):
            print(f"Received response: {reply.message}")

        for reply in stub.Chat(requests("dave", "erin"), timeout=TIMEOUT):
            print(f"Received response: {reply.message}")

        # with_call=True: the reply and the call (status, metadata)
        reply, call = stub.SayHello(HelloRequest(name="frank"), timeout=TIMEOUT,
                                    metadata=[("x-user", "frank")], with_call=True)
        code = call.code()  # None while the call runs; OK is 0, so compare with None
        status = code.name if code is not None else "running"
        print(f"Received response: {reply.message} (status {status})")


if __name__ == "__main__":
    main()
