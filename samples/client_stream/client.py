"""Calls Greeter.clientStream on client_stream/server.py."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
import greeter_pb2

import dubbo
from dubbo.configs import ReferenceConfig


class GreeterServiceStub:
    def __init__(self, client: dubbo.Client):
        self.client_stream = client.client_stream(
            method_name="clientStream",
            request_serializer=greeter_pb2.GreeterRequest.SerializeToString,
            response_deserializer=greeter_pb2.GreeterReply.FromString,
        )

    def say_hello_to_all(self, values):
        return self.client_stream(values)


if __name__ == "__main__":
    reference_config = ReferenceConfig.from_url(
        "tri://127.0.0.1:50051/org.apache.dubbo.samples.proto.Greeter"
    )
    dubbo_client = dubbo.Client(reference_config)

    stub = GreeterServiceStub(dubbo_client)

    # Iterator of request
    def request_generator():
        for item in ["alice", "bob", "carol"]:
            yield greeter_pb2.GreeterRequest(name=str(item))

    result = stub.say_hello_to_all(request_generator())

    print(f"Received response: {result.message}")

    dubbo_client.close()
