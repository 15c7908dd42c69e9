"""An apache-dubbo 3.0.0b1 provider registered in ZooKeeper (run with its virtualenv).

    <apache-dubbo venv>/bin/python -I provider.py ZK_HOST:ZK_PORT [PORT]

Serves the unary method ``sayHello`` (bytes in, ``b"hello, " + request`` out) of
``org.apache.dubbo.samples.registry.Greeter`` on 127.0.0.1:PORT (a free port if not
given), registered through ``dubbo.Dubbo(registry_config=...)`` as apache-dubbo's own
samples do. Prints ``READY <port>`` once the node is written and the port accepts
connections, then serves until stdin closes.

apache-dubbo 3.0.0b1 has no way to stop a server or unregister it: when stdin closes
this script stops apache-dubbo's kazoo clients (their ZooKeeper sessions end, so the
ephemeral node goes at once, as after a clean shutdown) and exits. SIGKILL it for a
crash: the node then stays until the session times out (kazoo's default, 10 s).
"""

import gc
import os
import socket
import sys
import time

import dubbo
from dubbo.configs import RegistryConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.registry.Greeter"


def say_hello(request: bytes) -> bytes:
    return b"hello, " + request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    zookeeper = sys.argv[1]
    # apache-dubbo registers the port it is given before binding it: it cannot take 0.
    port = int(sys.argv[2]) if len(sys.argv) > 2 else free_port()
    bootstrap = dubbo.Dubbo(registry_config=RegistryConfig.from_url(f"zookeeper://{zookeeper}"))
    service = RpcServiceHandler(
        service_name=SERVICE,
        method_handlers=[RpcMethodHandler.unary(say_hello, method_name="sayHello")],
    )
    server = bootstrap.create_server(ServiceConfig(service, host="127.0.0.1", port=port))
    server.start()  # writes the node, then binds
    wait_for_port(port)
    print(f"READY {port}", flush=True)

    sys.stdin.read()  # until the test closes our stdin

    from kazoo.client import KazooClient
    for client in [o for o in gc.get_objects() if isinstance(o, KazooClient)]:
        client.stop()
        client.close()
    sys.stdout.flush()
    os._exit(0)  # its event loop and executor threads are not daemons and never end


if __name__ == "__main__":
    main()
