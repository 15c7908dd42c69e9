"""Calls Greeter.serverStream on server_stream/server.py."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
import greeter_pb2

import dubbo
from dubbo.configs import ReferenceConfig


class GreeterServiceStub:
    def __init__(self, client: dubbo.Client):
        self.server_stream = client.server_stream(
            method_name="serverStream",
            request_serializer=greeter_pb2.GreeterRequest.SerializeToString,
            response_deserializer=greeter_pb2.GreeterReply.FromString,
        )

    def say_hello_many_times(self, request):
        return self.server_stream(request)


if __name__ == "__main__":
    reference_config = ReferenceConfig.from_url(
        "tri://127.0.0.1:50051/org.apache.dubbo.samples.proto.Greeter"
    )
    dubbo_client = dubbo.Client(reference_config)

    stub = GreeterServiceStub(dubbo_client)

    result = stub.say_hello_many_times(greeter_pb2.GreeterRequest(name="dubbo-python"))

    for i in result:
        print(f"Received response: {i.message}")

    dubbo_client.close()
