"""Calls helloworld/server.py: one unary call carrying raw bytes."""

import dubbo
from dubbo.configs import ReferenceConfig


class HelloWorldStub:
    def __init__(self, client: dubbo.Client):
        # No serializers: the call takes and returns bytes.
        self.unary = client.unary(method_name="sayHello")

    def say_hello(self, request: bytes) -> bytes:
        return self.unary(request)


if __name__ == "__main__":
    reference_config = ReferenceConfig.from_url(
        "tri://127.0.0.1:50051/org.apache.dubbo.samples.HelloWorld"
    )
    dubbo_client = dubbo.Client(reference_config)

    stub = HelloWorldStub(dubbo_client)

    result = stub.say_hello(b"dubbo-python")

    print(f"Received response: {result.decode()}")

    dubbo_client.close()
