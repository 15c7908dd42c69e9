"""Graceful shutdown: ``server.stop(grace=2)`` lets the call in flight finish, refuses
new ones, and cancels whatever still runs when the grace period is over.

    python samples/features/shutdown.py
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.Shutdown"
entered = threading.Event()


def work(request, context):
    entered.set()
    time.sleep(0.5)
    return b"work finished"


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(work)])
server = dubbo.Server(ServiceConfig(service, port=0)).start()

with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}")) as client:
    with ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(client.unary("work"), b"", timeout=10)
        entered.wait(5)
        started = time.monotonic()
        stopping = pool.submit(server.stop, grace=2)
        time.sleep(0.1)
        try:
            client.unary("work")(b"", timeout=5)
        except dubbo.RpcError as err:
            print(f"client: new call during shutdown -> {err.code.name}")
        print(f"client: in-flight call -> {in_flight.result(timeout=10).decode()}")
        stopping.result(timeout=10)
        print(f"server: stopped after {time.monotonic() - started:.1f} s")
