"""Calls Greeter.serverStream on server_stream/server.py through the generated stub."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
import greeter_dubbo
import greeter_pb2

import dubbo
from dubbo.configs import ReferenceConfig

if __name__ == "__main__":
    reference_config = ReferenceConfig.from_url(
        "tri://127.0.0.1:50051/org.apache.dubbo.samples.proto.Greeter"
    )
    dubbo_client = dubbo.Client(reference_config)

    stub = greeter_dubbo.GreeterStub(dubbo_client)

    # The result is an iterator of replies (and the call: .code(), .cancel(), ...).
    result = stub.serverStream(greeter_pb2.GreeterRequest(name="dubbo-python"), timeout=10)

    for i in result:
        print(f"Received response: {i.message}")

    dubbo_client.close()
