"""Keepalive: a client that PINGs its connection notices a peer that went silent (a
dead host, a dropped NAT entry) and fails the call instead of waiting forever.

A tiny TCP relay sits between client and server and "freezes" on command: it stops
forwarding without closing anything, as a vanished peer would.

    python samples/features/keepalive.py
"""

import selectors
import socket
import threading
import time

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.Keepalive"
stop_handler = threading.Event()


def watch(request, context):
    yield b"watching"
    stop_handler.wait(10)  # then nothing more: the call stays open


class FreezingRelay:
    def __init__(self, target_port):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target_port = target_port
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self.run, name="relay", daemon=True)
        self.thread.start()

    def run(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for s in peers:
                selector.register(s, selectors.EVENT_READ)
            while not self.closed.is_set():
                for key, _ in selector.select(0.05):
                    if self.frozen.is_set():
                        continue  # read nothing, forward nothing, close nothing
                    data = key.fileobj.recv(65536)
                    if not data:
                        self.closed.set()
                        break
                    peers[key.fileobj].sendall(data)
        for s in peers:
            s.close()
        self.listener.close()

    def close(self):
        self.closed.set()
        self.thread.join(5)


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.server_stream(watch)])
server = dubbo.Server(ServiceConfig(service, port=0)).start()
relay = FreezingRelay(server.port)

client = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{relay.port}/{SERVICE}"),
                      keepalive_time=0.2, keepalive_timeout=0.5)
replies = client.server_stream("watch")(b"")  # no deadline: only keepalive can end it
print(f"client: got {next(replies).decode()!r}")
relay.frozen.set()
print("relay: frozen (no FIN, no RST: the server just went silent)")
started = time.monotonic()
try:
    next(replies)
except dubbo.RpcError as err:
    print(f"client: call failed with {err.code.name} after {time.monotonic() - started:.1f} s")

client.close()
relay.close()
stop_handler.set()
server.stop(grace=1)
