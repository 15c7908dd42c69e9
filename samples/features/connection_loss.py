"""Connection loss: calls in flight fail with UNAVAILABLE when the connection breaks;
while the server is down calls fail fast; the same client reconnects once it is back.

    python samples/features/connection_loss.py
"""

import time

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.ConnectionLoss"


def hello(request, context):
    return b"hello"


def numbers(request, context):
    for i in range(100):
        if not context.is_active():
            return
        yield str(i).encode()
        time.sleep(0.05)


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(hello),
                                      RpcMethodHandler.server_stream(numbers)])
server = dubbo.Server(ServiceConfig(service, port=0)).start()
port = server.port

with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}")) as client:
    replies = client.server_stream("numbers")(b"")
    print(f"client: stream started, got {next(replies).decode()}")
    server.stop(grace=0)  # the connection goes away under the stream
    try:
        for _ in replies:
            pass
    except dubbo.RpcError as err:
        print(f"client: in-flight stream failed with {err.code.name}")

    started = time.monotonic()
    try:
        client.unary("hello")(b"", timeout=5)
    except dubbo.RpcError as err:
        print(f"client: call while the server is down -> {err.code.name} "
              f"in {time.monotonic() - started:.2f} s")

    server = dubbo.Server(ServiceConfig(service, port=port)).start()
    for _ in range(50):  # backoff: 0.1 s after a failed connect, doubling up to 5 s
        try:
            reply = client.unary("hello")(b"", timeout=5)
            print(f"client: server is back, reconnected: {reply.decode()!r}")
            break
        except dubbo.RpcError:
            time.sleep(0.1)

server.stop()
