"""``dubbo.Channel``: a drop-in for ``grpc.insecure_channel`` on our client, so the stubs
grpcio-tools generates (``x_pb2_grpc.XStub(channel)``) and the code around them run
unchanged over dubbo's HTTP/2 transport.

The channel imports grpcio when it is made (errors raised through it are
``grpc.RpcError``, and generated code imports grpc anyway); the rest of dubbo never
needs grpcio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..client import Client
from ..configs import ReferenceConfig
from ..status import RpcError
from ..wire.framing import DEFAULT_MAX_MESSAGE_SIZE

if TYPE_CHECKING:  # pragma: no cover
    import ssl

    from ..client.client import ClientConnection
    from . import _calls

__all__ = ["Channel", "parse_target"]

# grpc's default port for a target without one (grpc naming.md).
DEFAULT_TARGET_PORT = 443
# How often a waiting wait_for_ready call or subscription tries to connect again.
READY_POLL = 0.05
READY_POLL_MAX = 1.0
_NO_LIMIT = 2**31 - 1  # grpc's INT_MAX: "no keepalive" / "no limit"


def parse_target(target: str) -> tuple[str, int]:
    """``(host, port)`` of a grpc target: ``host:port``, ``[::1]:port``, ``host``
    (port 443, as grpc), ``dns:///host:port``, ``dns:host:port``, ``ipv4:a.b.c.d:port``,
    ``ipv6:[::1]:port``. Other schemes (``unix:``, ``xds:``) are refused."""
    rest = target.strip()
    scheme, sep, tail = rest.partition(":")
    if sep and scheme in ("dns", "ipv4", "ipv6"):
        rest = tail
        if scheme == "dns" and rest.startswith("//"):
            rest = rest[2:].partition("/")[2]  # dns://authority/host:port
        rest = rest.split(",")[0]  # ipv4:a:p,b:p lists: the first address
    elif sep and scheme in ("unix", "unix-abstract", "vsock", "xds", "google-c2p"):
        raise ValueError(f"unsupported target {target!r}: dubbo.Channel connects over TCP "
                         "(host:port)")
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.lstrip(":")
    elif rest.count(":") > 1:  # a bare IPv6 address, no port
        host, port_text = rest, ""
    else:
        host, _, port_text = rest.partition(":")
    if not host:
        raise ValueError(f"no host in target {target!r}")
    try:
        port = int(port_text) if port_text else DEFAULT_TARGET_PORT
    except ValueError:
        raise ValueError(f"bad port in target {target!r}") from None
    return host, port


def _client_options(options: Sequence[tuple[str, Any]] | None) -> dict[str, Any]:
    """Our ``Client`` keywords for the grpc channel options we understand; others are
    ignored, as grpcio ignores options it does not know."""
    kwargs: dict[str, Any] = {}
    for key, value in options or ():
        if key == "grpc.max_receive_message_length":
            kwargs["max_receive_message_size"] = None if value < 0 else int(value)
        elif key == "grpc.max_send_message_length":
            kwargs["max_send_message_size"] = None if value < 0 else int(value)
        elif key == "grpc.keepalive_time_ms":
            kwargs["keepalive_time"] = None if value >= _NO_LIMIT else value / 1000.0
        elif key == "grpc.keepalive_timeout_ms":
            kwargs["keepalive_timeout"] = value / 1000.0
        elif key == "grpc.keepalive_permit_without_calls":
            kwargs["keepalive_permit_without_calls"] = bool(value)
        elif key == "grpc.default_compression_algorithm":
            kwargs["compression"] = value
    return kwargs


class Channel:
    """A grpc channel to one ``host:port`` over one multiplexed HTTP/2 connection.

    ``options`` takes grpc's channel options (message size limits, keepalive, default
    compression); ``compression`` a ``grpc.Compression`` or a name ("gzip").
    ``ssl_context`` (``dubbo.transport.tls.client_context()``) makes it TLS, like
    ``grpc.secure_channel``. Thread-safe; ``close()`` it (or use ``with``).
    """

    def __init__(self, target: str, options: Sequence[tuple[str, Any]] | None = None,
                 compression: Any = None, *, ssl_context: ssl.SSLContext | None = None,
                 connect_timeout: float = 5.0) -> None:
        try:
            from . import _calls
        except ImportError as exc:  # pragma: no cover - grpcio is in the test extra
            raise ImportError("dubbo.Channel runs grpcio's generated code and raises "
                              "grpc.RpcError: install grpcio (pip install grpcio)") from exc
        self._calls = _calls
        host, port = parse_target(target)
        self.target = target
        kwargs = _client_options(options)
        if compression is not None:
            kwargs["compression"] = compression
        kwargs.setdefault("max_receive_message_size", DEFAULT_MAX_MESSAGE_SIZE)
        # One provider, no retries: a call runs once, as on a grpc channel.
        reference = ReferenceConfig(service=f"{host}:{port}", host=host, port=port,
                                    cluster="failfast")
        self._client = Client(reference, ssl_context=ssl_context,
                              connect_timeout=connect_timeout, **kwargs)
        self._lock = threading.Lock()  # guards _subscribers, _closed
        self._subscribers: dict[Callable[[Any], None], threading.Event] = {}
        self._closed = threading.Event()

    # -- grpc.Channel ------------------------------------------------------------------

    def unary_unary(self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
                    response_deserializer: Callable[[bytes], Any] | None = None,
                    _registered_method: bool | None = False) -> _calls.UnaryUnaryMultiCallable:
        return self._calls.UnaryUnaryMultiCallable(self, method, request_serializer,
                                                   response_deserializer)

    def unary_stream(self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
                     response_deserializer: Callable[[bytes], Any] | None = None,
                     _registered_method: bool | None = False) -> _calls.UnaryStreamMultiCallable:
        return self._calls.UnaryStreamMultiCallable(self, method, request_serializer,
                                                    response_deserializer)

    def stream_unary(self, method: str, request_serializer: Callable[[Any], bytes] | None = None,
                     response_deserializer: Callable[[bytes], Any] | None = None,
                     _registered_method: bool | None = False) -> _calls.StreamUnaryMultiCallable:
        return self._calls.StreamUnaryMultiCallable(self, method, request_serializer,
                                                    response_deserializer)

    def stream_stream(self, method: str,
                      request_serializer: Callable[[Any], bytes] | None = None,
                      response_deserializer: Callable[[bytes], Any] | None = None,
                      _registered_method: bool | None = False,
                      ) -> _calls.StreamStreamMultiCallable:
        return self._calls.StreamStreamMultiCallable(self, method, request_serializer,
                                                     response_deserializer)

    def subscribe(self, callback: Callable[[Any], None], try_to_connect: bool = False) -> None:
        """Report connectivity to ``callback(grpc.ChannelConnectivity)`` from another
        thread: the state now and, with ``try_to_connect``, READY once connected (what
        ``grpc.channel_ready_future`` waits for). Stops on ``unsubscribe`` or ``close``."""
        stop = threading.Event()
        with self._lock:
            if self._closed.is_set():
                return
            old = self._subscribers.get(callback)
            if old is not None:
                old.set()
            self._subscribers[callback] = stop
        threading.Thread(target=self._watch, args=(callback, stop, try_to_connect),
                         name="dubbo-channel-connectivity", daemon=True).start()

    def unsubscribe(self, callback: Callable[[Any], None]) -> None:
        with self._lock:
            stop = self._subscribers.pop(callback, None)
        if stop is not None:
            stop.set()

    def close(self) -> None:
        """Close the connection: calls in flight fail with CANCELLED, as on grpcio; a
        later call raises ``ValueError``, as grpcio's does."""
        with self._lock:
            self._closed.set()
            subscribers, self._subscribers = self._subscribers, {}
        for stop in subscribers.values():
            stop.set()
        self._client.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<dubbo.Channel {self.target}>"

    # -- for the multi-callables -------------------------------------------------------

    @property
    def client(self) -> Client:
        """The ``dubbo.Client`` underneath: its methods take a full ``/svc/Method`` path."""
        return self._client

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_ready(self, deadline: float | None, stop: threading.Event | None = None) -> bool:
        """Wait until the connection is up (``wait_for_ready=True``): True once it is,
        False at ``deadline`` (monotonic), on ``stop`` or when the channel closes."""
        pause = READY_POLL
        while not self._closed.is_set() and (stop is None or not stop.is_set()):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                connection = self._client.connection()
            except RpcError:
                connection = None  # refused, or backing off after a refusal
            if connection is not None and _wait_connected(
                    connection, min(READY_POLL_MAX, 1e9 if remaining is None else remaining)):
                return True
            wait = pause if remaining is None else min(pause, remaining)
            self._closed.wait(wait) if stop is None else stop.wait(wait)
            pause = min(READY_POLL_MAX, pause * 2)
        return False

    def _watch(self, callback: Callable[[Any], None], stop: threading.Event,
               try_to_connect: bool) -> None:
        connectivity = self._calls.ChannelConnectivity
        if not try_to_connect:
            callback(connectivity.IDLE)
            return
        callback(connectivity.CONNECTING)
        if self.wait_ready(None, stop) and not stop.is_set():
            callback(connectivity.READY)


def _wait_connected(connection: ClientConnection, timeout: float) -> bool:
    """Wait up to ``timeout`` for a connection's handshake; True if it is up."""
    with connection.lock:
        connection.lock.wait_for(lambda: connection.connected or connection.closed, timeout)
        return connection.connected and not connection.closed
