"""Deadlines: every call takes ``timeout=`` seconds, the handler sees the time left, and
the server ends an expired call itself.

    python samples/features/deadlines.py
"""

import threading
import time

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler


def say(line: str) -> None:
    # One write per line: client and server threads print concurrently.
    print(line + "\n", end="", flush=True)

SERVICE = "org.apache.dubbo.samples.Deadlines"
handler_ended = threading.Event()


def quick(request, context):
    left = context.time_remaining()  # seconds, or None when the call has no deadline
    return b"none" if left is None else f"{left:.1f}".encode()


def slow(request, context):
    # Works for 3 s but checks is_active(): it turns False when the deadline passes.
    end = time.monotonic() + 3
    while time.monotonic() < end and context.is_active():
        time.sleep(0.01)
    say(f"server: slow handler stopped working, is_active() = {context.is_active()}")
    handler_ended.set()
    return b"too late"


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(quick), RpcMethodHandler.unary(slow)])
server = dubbo.Server(ServiceConfig(service, port=0)).start()
url = f"tri://127.0.0.1:{server.port}/{SERVICE}"

with dubbo.Client(ReferenceConfig.from_url(url)) as client:
    left = client.unary("quick")(b"", timeout=5).decode()
    say(f"client: quick, timeout=5 -> handler saw {left} s left")
    say(f"client: quick, no timeout -> handler saw {client.unary('quick')(b'').decode()}")
    started = time.monotonic()
    try:
        client.unary("slow")(b"", timeout=0.5)
    except dubbo.RpcError as err:
        say(f"client: slow call failed: {err.code.name} after {time.monotonic() - started:.1f} s")
    handler_ended.wait(5)

# In a URL, timeout is in milliseconds (Dubbo style): a default deadline for every call.
with dubbo.Client(ReferenceConfig.from_url(url + "?timeout=300")) as client:
    say(f"client: ?timeout=300 -> handler saw {client.unary('quick')(b'').decode()} s left")

server.stop()
