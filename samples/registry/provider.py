"""A provider registered in ZooKeeper: run two or three of these, then consumer.py.

    python samples/registry/provider.py [NAME]

ZooKeeper is expected at 127.0.0.1:2181 as in Dubbo's samples (set ZOOKEEPER to change
it). The provider serves on a free port, writes its node under
/dubbo/org.apache.dubbo.samples.registry.Greeter/providers, and on Enter leaves the
registry first, waits a moment for consumers to drop it, then drains its calls.
"""

import os
import sys

import dubbo
from dubbo.configs import RegistryConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.registry.Greeter"
ZOOKEEPER = os.environ.get("ZOOKEEPER", "127.0.0.1:2181")

if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else f"provider-{os.getpid()}"

    def say_hello(request: bytes) -> bytes:
        return f"hello, {request.decode()}, from {name}".encode()

    service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(say_hello, "sayHello")])
    bootstrap = dubbo.Dubbo(registry_config=RegistryConfig.from_url(f"zookeeper://{ZOOKEEPER}"))
    server = bootstrap.create_server(ServiceConfig(service, host="127.0.0.1", port=0)).start()
    print(f"{name} serving on 127.0.0.1:{server.port}, registered in {ZOOKEEPER}")

    input("Press Enter to stop the provider...\n")
    server.stop()
    bootstrap.close()
