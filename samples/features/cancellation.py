"""Cancellation: the client stops a server stream with ``replies.cancel()``; the handler
sees ``is_active()`` turn False and its ``add_callback`` function runs.

    python samples/features/cancellation.py
"""

import threading
import time

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.Cancellation"
ended = threading.Event()


def say(line: str) -> None:
    # One write per line: client and server threads print concurrently.
    print(line + "\n", end="", flush=True)


def ticker(request, context):
    context.add_callback(lambda: say("server: callback ran, the call is over"))
    try:
        for i in range(1000):
            if not context.is_active():
                break
            yield f"tick {i}".encode()
            time.sleep(0.05)
    finally:
        # a cancelled call also closes the generator (GeneratorExit at its yield)
        say(f"server: handler finished, is_active() = {context.is_active()}")
        ended.set()


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.server_stream(ticker)])
server = dubbo.Server(ServiceConfig(service, port=0)).start()

with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}")) as client:
    replies = client.server_stream("ticker")(b"")
    for _ in range(3):
        say(f"client: got {next(replies).decode()}")
    replies.cancel()  # RST_STREAM(CANCEL) to the server
    say(f"client: cancelled, call code = {replies.code().name}")
    try:
        next(replies)
    except dubbo.RpcError as err:
        say(f"client: reading on raises {err.code.name}")
    ended.wait(5)

server.stop()
