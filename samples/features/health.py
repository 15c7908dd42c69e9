"""Health checking: every server answers ``grpc.health.v1.Health``, as load balancers,
Kubernetes gRPC probes and grpc_health_probe expect; ``server.health.set()`` changes
what it says, and ``stop()`` turns everything NOT_SERVING before draining.

    python samples/features/health.py
"""

import queue
import threading

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.services import health

SERVICE = "org.apache.dubbo.samples.Orders"


def place(request: bytes) -> bytes:
    return b"placed"


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(place)])
server = dubbo.Server(ServiceConfig(service, port=0)).start()

# A dubbo.Client for the health service itself; grpcio's HealthStub works the same way.
url = f"tri://127.0.0.1:{server.port}/{health.SERVICE_NAME}"
with dubbo.Client(ReferenceConfig.from_url(url)) as client:
    print(f"client: server -> {health.check(client).name}")
    print(f"client: {SERVICE} -> {health.check(client, SERVICE).name}")
    try:
        health.check(client, "org.apache.dubbo.samples.Nothing")
    except dubbo.RpcError as err:
        print(f"client: unknown service -> {err.code.name}")

    # Watch streams the status now and every change, until the server stops.
    seen: queue.Queue = queue.Queue()

    def watch() -> None:
        for status in health.watch(client, SERVICE, timeout=10):
            seen.put(status.name)
        seen.put("(end)")

    watcher = threading.Thread(target=watch)
    watcher.start()
    print(f"client: watch -> {seen.get(timeout=5)}")
    server.health.set(SERVICE, "NOT_SERVING")  # e.g. its database went away
    print(f"client: watch -> {seen.get(timeout=5)}")
    print(f"client: {SERVICE} -> {health.check(client, SERVICE).name}")
    server.health.set(SERVICE, "SERVING")
    print(f"client: watch -> {seen.get(timeout=5)}")
    server.stop()  # NOT_SERVING for all, then the watch ends
    print(f"client: watch -> {seen.get(timeout=5)} {seen.get(timeout=5)}")
    watcher.join(10)
