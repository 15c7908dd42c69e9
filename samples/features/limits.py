"""Limits: message size limits on both sides, and a bounded worker pool that refuses
calls at once instead of queueing them.

    python samples/features/limits.py
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.Limits"
release = threading.Event()
entered = threading.Event()


def size(request, context):
    return str(len(request)).encode()


def busy(request, context):
    entered.set()
    release.wait(10)
    return b"done"


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(size), RpcMethodHandler.unary(busy)])
server = dubbo.Server(ServiceConfig(service, port=0),
                      max_receive_message_size=1024,  # bytes per request message
                      max_workers=1, max_pending_calls=0).start()

with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}"),
                  max_send_message_size=4096) as client:
    got = client.unary("size")(b"x" * 1024, timeout=5).decode()
    print(f"client: 1024 bytes -> server got {got}")
    for n in (2000, 5000):
        try:
            client.unary("size")(b"x" * n, timeout=5)
        except dubbo.RpcError as err:
            print(f"client: {n} bytes -> {err.code.name}: {err.details}")

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.unary("busy"), b"", timeout=10)
        entered.wait(5)
        try:
            client.unary("busy")(b"", timeout=5)
        except dubbo.RpcError as err:
            print(f"client: second call while the only worker is busy -> {err.code.name}")
        release.set()
        print(f"client: first call -> {first.result(timeout=10).decode()}")

server.stop()
