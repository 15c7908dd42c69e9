"""One provider address as a client sees it: its shared connection, its reconnect
backoff and how many calls it is running (what balancers weigh)."""

from __future__ import annotations

import random
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from ..status import CancelledError, RpcError, StatusCode, UnavailableError
from ..transport.tls import TLSLayer

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client, ClientConnection

__all__ = ["Endpoint"]

# Reconnect backoff (grpc connection-backoff.md, scaled down for a local client): the
# first reconnect is immediate; after a failed connect, attempts are spaced 0.1 s,
# then x1.6 each time (+-20 % jitter) up to 5 s. Calls meanwhile fail fast.
BACKOFF_INITIAL = 0.1
BACKOFF_MULTIPLIER = 1.6
BACKOFF_MAX = 5.0
BACKOFF_JITTER = 0.2


class Endpoint:
    """``_lock`` guards ``_current``, ``_connections``, ``_closed``, ``active`` and the
    backoff fields. ``key``, ``host``, ``port`` never change; ``weight`` may be updated
    by the registry (a plain int: readers see the old or the new value)."""

    def __init__(self, client: Client, host: str, port: int, weight: int = 100) -> None:
        self.client = client
        self.host = host
        self.port = port
        self.key = f"{host}:{port}"
        self.authority = f"[{host}]:{port}" if ":" in host else self.key
        self.weight = weight
        self.active = 0  # calls running on this endpoint (balancers read it unlocked)
        self._lock = threading.Lock()
        self._current: ClientConnection | None = None
        self._connections: set[ClientConnection] = set()
        self._closed = False
        self._retired = False  # left the registry: finish what runs, start nothing new
        self._backoff = 0.0  # the last backoff interval; 0 after a good connect
        self._retry_at = 0.0  # no connect attempt before this (monotonic)
        self._connect_error = ""
        # getaddrinfo's (family, address) for host:port, kept until a connect fails.
        self._resolved: tuple[int, tuple[Any, ...]] | None = None
        # A new connection whose loop thread waits for start_loop() (connection()).
        self._deferred: ClientConnection | None = None

    def __repr__(self) -> str:
        return f"<Endpoint {self.key} weight={self.weight} active={self.active}>"

    # -- load ------------------------------------------------------------------------

    def call_started(self) -> None:
        with self._lock:
            self.active += 1

    def call_ended(self) -> None:
        with self._lock:
            self.active -= 1

    def available(self) -> bool:
        """False while a failed connect is being backed off from: a provider that
        refuses connections is set aside at once, not only when the registry notices."""
        return not self._closed and time.monotonic() >= self._retry_at

    # -- connections -----------------------------------------------------------------

    def connection(self, defer_loop: bool = False) -> ClientConnection:
        """The shared connection, (re)connecting when there is none usable.

        ``defer_loop``: a new connection may leave its loop thread unstarted until the
        caller's ``start_loop()`` (see ``ClientConnection``).

        Never waits on the network: a new connection connects in its own loop thread,
        and each caller waits for it in ``open_stream`` up to its own deadline, so one
        stalled connect or handshake holds no other caller in line."""
        # Unlocked first look, the usual case (one writer per field, each read once; a
        # stale answer is a connection closing under us, which open_stream reports as
        # not sent, the same race as a close right after the locked look).
        current = self._current
        if current is not None and not (self._closed or self._backoff or current.closed
                                        or current.draining):
            return current
        client = self.client
        with self._lock:
            current = self._usable_locked()
        if current is not None:
            return current
        from .client import ClientConnection  # a cycle: client.py imports this module
        # Resolved outside the lock: a slow name lookup holds no other caller.
        resolved = self._resolved
        if resolved is None:
            resolved = self._resolved = _literal_address(self.host, self.port)
        if resolved is None:
            try:
                family, _, _, _, address = socket.getaddrinfo(
                    self.host, self.port, type=socket.SOCK_STREAM)[0]
            except OSError as exc:
                with self._lock:
                    self._set_backoff_locked(str(exc))
                raise UnavailableError(StatusCode.UNAVAILABLE,
                                       f"failed to resolve {self.key}: {exc}") from exc
            resolved = self._resolved = (family, address)
        with self._lock:
            current = self._usable_locked()  # another caller may have connected meanwhile
            if current is not None:
                return current
            try:
                tls = None if client.ssl_context is None else TLSLayer(
                    client.ssl_context, server_side=False, server_hostname=self.host)
                connection = ClientConnection(resolved[1], resolved[0], self._connection_idle,
                                              self._connect_failed, tls,
                                              client.connect_timeout, defer_loop=defer_loop)
            except OSError as exc:
                self._set_backoff_locked(str(exc))
                raise UnavailableError(StatusCode.UNAVAILABLE,
                                       f"failed to connect to {self.key}: {exc}") from exc
            self._current = connection
            self._connections.add(connection)
            if defer_loop:
                self._deferred = connection
        if client.keepalive_time:
            always = client.keepalive_permit_without_calls
            connection.start_keepalive(client.timer(), client.keepalive_time,
                                       client.keepalive_timeout,
                                       lambda: always or bool(connection.calls))
        return connection

    def start_loop(self) -> None:
        """Start the loop thread ``connection(defer_loop=True)`` left for later: the
        caller's first request is on its way, or it failed (any thread; cheap when
        there is none)."""
        if self._deferred is None:  # an unlocked peek: looked at again under the lock
            return
        with self._lock:
            connection, self._deferred = self._deferred, None
        if connection is not None:
            connection.start_loop()

    def _adopt(self, connection: ClientConnection) -> None:
        """Use ``connection`` (built on a given socket) as this provider's connection
        (tests/memory_pair.py)."""
        with self._lock:
            self._current = connection
            self._connections.add(connection)

    def _usable_locked(self) -> ClientConnection | None:
        """The current connection if calls may use it; raises while backing off."""
        if self._closed:
            raise UnavailableError(StatusCode.UNAVAILABLE, "client is closed"
                                   if not self._retired else
                                   f"provider {self.key} left the registry")
        current = self._current
        if current is not None and not current.closed and not current.draining:
            if self._backoff and current.connected:
                self._backoff = self._retry_at = 0.0
            return current
        now = time.monotonic()
        if now < self._retry_at:
            raise UnavailableError(
                StatusCode.UNAVAILABLE,
                f"failed to connect to {self.key} ({self._connect_error}); "
                f"next attempt in {self._retry_at - now:.2f}s")
        return None

    def _set_backoff_locked(self, error: str) -> None:
        self._backoff = min(BACKOFF_MAX, self._backoff * BACKOFF_MULTIPLIER) \
            if self._backoff else BACKOFF_INITIAL
        jitter = 1 + random.uniform(-BACKOFF_JITTER, BACKOFF_JITTER)
        self._retry_at = time.monotonic() + self._backoff * jitter
        self._connect_error = error

    def _connect_failed(self, connection: ClientConnection, error: RpcError) -> None:
        """A connection died before it was up (its loop thread): back off, and look
        the name up again next time (it may have moved)."""
        with self._lock:
            self._set_backoff_locked(error.details)
            self._resolved = None
            if connection is self._current:
                self._current = None

    def _connection_idle(self, connection: ClientConnection) -> None:
        """A draining or dead connection has no calls left: close it."""
        with self._lock:
            if connection is self._current:
                if not (connection.closed or connection.draining or self._retired):
                    return
                self._current = None
            self._connections.discard(connection)
        # UNAVAILABLE: a call still about to start on it sent nothing and may go elsewhere.
        connection.close(UnavailableError(StatusCode.UNAVAILABLE,
                                          f"connection to {self.key} closed: "
                                          "draining, or the provider left"))

    def retire(self) -> None:
        """The provider left: no new calls; connections close once their calls end."""
        with self._lock:
            self._closed = self._retired = True
            self._current = None
            connections = list(self._connections)
        for connection in connections:
            with connection.lock:
                connection.draining = True
                idle = not connection.calls
            if idle:
                self._connection_idle(connection)

    def close(self) -> None:
        """Close every connection; calls in flight fail with CANCELLED."""
        with self._lock:
            self._closed = True
            connections = list(self._connections)
            self._connections.clear()
            self._current = None
        for connection in connections:
            connection.close(CancelledError(StatusCode.CANCELLED, "client closed"))
        deadline = time.monotonic() + 5.0
        for connection in connections:
            connection.join(max(0.0, deadline - time.monotonic()))
            # Its loop thread is done too once close() returns: a client made per
            # connection leaves no thread winding down beside the next one's set-up.
            connection.loop.join(max(0.0, deadline - time.monotonic()))


def _literal_address(host: str, port: int) -> tuple[int, tuple[Any, ...]] | None:
    """What getaddrinfo gives for an IP address written out (no lookup to make), or None
    for a name (or a form only getaddrinfo reads, such as a scoped IPv6 address)."""
    for family, address in ((socket.AF_INET, (host, port)),
                            (socket.AF_INET6, (host, port, 0, 0))):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family, address
    return None
