"""A dubbo server and a dubbo client talking over ``socket.socketpair()``, no TCP.

``memory_pair(*handlers)`` starts a ``dubbo.Server`` (its listener binds 127.0.0.1:0,
and no connection ever reaches it) and hands it one end of a socketpair through
``Server._adopt``; the other end becomes the ``ClientConnection`` of a ``dubbo.Client``
whose one provider is that connection (``ClientConnection(sock=...)``,
``Endpoint._adopt``). Everything above the socket is the real thing: h2, the server's
I/O loop and workers, the client's loop, flow control, GOAWAY. A reconnect has nowhere
to go (the provider's name does not resolve): a test that needs one uses TCP.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import dubbo
from dubbo.client.client import ClientConnection
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "test.Memory"
ADDRESS = ("memory.invalid", 1)  # what the client calls its provider; never resolved


class MemoryPair:
    """``server``, ``client`` (a dubbo.Client), ``connection`` (its ClientConnection)."""

    def __init__(self, server: dubbo.Server, client: dubbo.Client,
                 connection: ClientConnection) -> None:
        self.server = server
        self.client = client
        self.connection = connection

    def server_connections(self) -> list[Any]:
        with self.server._lock:
            return list(self.server._connections)


@contextlib.contextmanager
def memory_pair(*handlers: RpcMethodHandler, service: str = SERVICE,
                server_options: dict[str, Any] | None = None,
                client_options: dict[str, Any] | None = None) -> Iterator[MemoryPair]:
    server = dubbo.Server(ServiceConfig(RpcServiceHandler(service, list(handlers)),
                                        host="127.0.0.1", port=0),
                          **(server_options or {})).start()
    client = None
    try:
        client = dubbo.Client(ReferenceConfig.from_url(
            f"tri://{ADDRESS[0]}:{ADDRESS[1]}/{service}"), **(client_options or {}))
        server_end, client_end = socket.socketpair()
        server._adopt(server_end)
        (endpoint,) = client._endpoints.values()
        try:
            connection = ClientConnection(ADDRESS, client_end.family,
                                          endpoint._connection_idle, endpoint._connect_failed,
                                          sock=client_end)
        except BaseException:
            client_end.close()
            raise
        endpoint._adopt(connection)
        yield MemoryPair(server, client, connection)
    finally:
        if client is not None:
            client.close()
        server.stop(grace=1)
