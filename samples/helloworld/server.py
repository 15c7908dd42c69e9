"""The smallest Triple server: one unary method on raw bytes (no serializers)."""

import dubbo
from dubbo.configs import ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler


def say_hello(request: bytes) -> bytes:
    # Without (de)serializers the handler sees and returns the message bytes as they are.
    print(f"Received message from {request.decode()}")
    return b"hello, " + request


if __name__ == "__main__":
    # build a method handler
    method_handler = RpcMethodHandler.unary(say_hello, method_name="sayHello")
    # build a service handler
    service_handler = RpcServiceHandler(
        service_name="org.apache.dubbo.samples.HelloWorld",
        method_handlers=[method_handler],
    )

    service_config = ServiceConfig(service_handler)

    # start the server
    server = dubbo.Server(service_config).start()

    input("Press Enter to stop the server...\n")
    server.stop()
