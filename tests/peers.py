"""Adapters that let one interop test drive either grpcio or dubbo on each side.

Handlers are written once, grpcio style: ``fn(request_or_iterator, context)``. To fail a
call in an implementation-neutral way a handler raises :class:`Fail`; the server adapter
turns that into ``context.abort(grpc.StatusCode.X, ...)`` under grpcio and into
``raise dubbo.RpcError(dubbo.StatusCode.X, ...)`` under dubbo. Any other exception is
left alone, so each implementation's own handling of a crashing handler is what the
client sees.

dubbo is imported lazily, only when a dubbo peer is actually built, so the
grpcio<->grpcio combination runs even while the package is not importable; combinations
that involve dubbo then fail in the test body with the import error.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

IMPLS = ("grpcio", "dubbo")

UNARY = "unary"
CLIENT_STREAM = "client_stream"
SERVER_STREAM = "server_stream"
BIDI_STREAM = "bidi_stream"
KINDS = (UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI_STREAM)


class Fail(Exception):
    """Raised by a handler to end its call with status ``code_name`` and ``details``."""

    def __init__(self, code_name: str, details: str) -> None:
        super().__init__(code_name, details)
        self.code_name = code_name
        self.details = details


def _dubbo() -> Any:
    import dubbo

    return dubbo


# --------------------------------------------------------------------------- errors


def call_error(exc: BaseException) -> tuple[str, str]:
    """(status code name, details) of a failed call from either client implementation."""
    dubbo = sys.modules.get("dubbo")
    if dubbo is not None and isinstance(exc, getattr(dubbo, "RpcError", ())):
        # API.md: dubbo.RpcError has the attributes .code (a StatusCode) and .details.
        return exc.code.name, exc.details
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code().name, exc.details()
    raise AssertionError(f"not an RPC error: {exc!r}") from exc


def rpc_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes a failed call may raise, for ``pytest.raises``."""
    types: list[type[BaseException]] = [grpc.RpcError]
    dubbo = sys.modules.get("dubbo")
    if dubbo is not None and hasattr(dubbo, "RpcError"):
        types.append(dubbo.RpcError)
    return tuple(types)


# --------------------------------------------------------------------------- servers


def _wrap(impl: str, kind: str, fn: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    """Translate a raised :class:`Fail` into the implementation's own way of failing."""

    def fail(exc: Fail, context: Any) -> Any:
        if impl == "grpcio":
            context.abort(getattr(grpc.StatusCode, exc.code_name), exc.details)
            raise AssertionError("grpc context.abort returned")  # pragma: no cover
        dubbo = _dubbo()
        raise dubbo.RpcError(getattr(dubbo.StatusCode, exc.code_name), exc.details) from None

    if kind in (UNARY, CLIENT_STREAM):

        def unary_response(request: Any, context: Any) -> Any:
            try:
                return fn(request, context)
            except Fail as exc:
                return fail(exc, context)

        return unary_response

    def stream_response(request: Any, context: Any) -> Iterable[Any]:
        try:
            yield from fn(request, context)
        except Fail as exc:
            fail(exc, context)

    return stream_response


def start_server(
    impl: str,
    handlers: dict[str, tuple],
    service: str = "org.apache.dubbo.samples.proto.Greeter",
    request_deserializer: Callable[[bytes], Any] | None = None,
    response_serializer: Callable[[Any], bytes] | None = None,
    *,
    features: dict[str, Any] | None = None,
    port: int = 0,
    **opts: Any,
) -> tuple[int, Callable[[], None]]:
    """Serve ``handlers`` on 127.0.0.1 with a free port; returns ``(port, stop)``.

    ``handlers`` maps a method name to ``(kind, fn)`` or
    ``(kind, fn, request_deserializer, response_serializer)``; the 2-tuple form uses the
    ``request_deserializer``/``response_serializer`` given here (None = raw bytes).
    ``features`` are implementation-neutral server settings (see :func:`server_settings`);
    ``port`` binds a given port instead of a free one. ``opts`` go to ``grpc.server`` or
    to ``ServiceConfig`` as before.
    """
    specs = {}
    for name, spec in handlers.items():
        if len(spec) == 2:
            kind, fn = spec
            req_de, resp_ser = request_deserializer, response_serializer
        else:
            kind, fn, req_de, resp_ser = spec
        assert kind in KINDS, kind
        specs[name] = (kind, _wrap(impl, kind, fn), req_de, resp_ser)

    if impl == "grpcio":
        factories = {
            UNARY: grpc.unary_unary_rpc_method_handler,
            CLIENT_STREAM: grpc.stream_unary_rpc_method_handler,
            SERVER_STREAM: grpc.unary_stream_rpc_method_handler,
            BIDI_STREAM: grpc.stream_stream_rpc_method_handler,
        }
        method_handlers = {
            name: factories[kind](fn, request_deserializer=de, response_serializer=ser)
            for name, (kind, fn, de, ser) in specs.items()
        }
        max_workers, grpc_kwargs = _grpcio_server_settings(features or {})
        server = grpc.server(ThreadPoolExecutor(max_workers=max_workers), **grpc_kwargs, **opts)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, method_handlers),)
        )
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        assert bound, f"grpcio could not bind 127.0.0.1:{port}"
        port = bound
        server.start()

        def stop_grpcio() -> None:
            server.stop(grace=0.5).wait(10)

        return port, stop_grpcio

    if impl == "dubbo":
        dubbo = _dubbo()
        from dubbo.configs import ServiceConfig
        from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

        factories = {
            UNARY: RpcMethodHandler.unary,
            CLIENT_STREAM: RpcMethodHandler.client_stream,
            SERVER_STREAM: RpcMethodHandler.server_stream,
            BIDI_STREAM: RpcMethodHandler.bi_stream,
        }
        method_handlers = {
            name: factories[kind](
                fn, method_name=name, request_deserializer=de, response_serializer=ser
            )
            for name, (kind, fn, de, ser) in specs.items()
        }
        service_handler = RpcServiceHandler(service_name=service, method_handlers=method_handlers)
        server = dubbo.Server(
            ServiceConfig(service_handler, host="127.0.0.1", port=port, **opts),
            **_dubbo_server_settings(features or {}),
        ).start()
        port = server.port
        assert isinstance(port, int) and port > 0, f"dubbo server.port = {port!r}"
        return port, server.stop

    raise ValueError(f"unknown implementation {impl!r}")


# --------------------------------------------------------------------------- clients


def _call_kwargs(timeout: float | None, metadata: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if metadata is not None:
        kwargs["metadata"] = metadata
    return kwargs


def _extra_call_kwargs(impl: str, compression: str | None) -> dict[str, Any]:
    if compression is None:
        return {}
    return {"compression": compression_arg(impl, compression)}


class _Client:
    """``.unary/.client_stream/.server_stream/.bidi_stream(method, req_ser, resp_deser)``
    return ``call(request_or_iterator, timeout=None, metadata=None)``."""

    def unary(self, method, req_ser=None, resp_deser=None):
        return self._bind(UNARY, method, req_ser, resp_deser)

    def client_stream(self, method, req_ser=None, resp_deser=None):
        return self._bind(CLIENT_STREAM, method, req_ser, resp_deser)

    def server_stream(self, method, req_ser=None, resp_deser=None):
        return self._bind(SERVER_STREAM, method, req_ser, resp_deser)

    def bidi_stream(self, method, req_ser=None, resp_deser=None):
        return self._bind(BIDI_STREAM, method, req_ser, resp_deser)

    impl = ""

    def _bind(self, kind, method, req_ser, resp_deser):
        multi = self._multi_callable(kind, method, req_ser, resp_deser)

        def call(request, timeout=None, metadata=None, compression=None, with_call=False):
            """``with_call`` (unary and client-stream only) returns ``(response, call)``;
            ``compression`` is an encoding name ("gzip", "deflate", "identity")."""
            kwargs = _call_kwargs(timeout, metadata)
            kwargs.update(_extra_call_kwargs(self.impl, compression))
            if with_call:
                assert kind in (UNARY, CLIENT_STREAM), kind
                if self.impl == "grpcio":
                    return multi.with_call(request, **kwargs)
                return multi(request, with_call=True, **kwargs)
            return multi(request, **kwargs)

        return call


class GrpcioClient(_Client):
    impl = "grpcio"

    def __init__(self, port: int, service: str, **features: Any) -> None:
        self.service = service
        options, kwargs = _grpcio_client_settings(features)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options, **kwargs)

    def _multi_callable(self, kind, method, req_ser, resp_deser):
        factory = {
            UNARY: self.channel.unary_unary,
            CLIENT_STREAM: self.channel.stream_unary,
            SERVER_STREAM: self.channel.unary_stream,
            BIDI_STREAM: self.channel.stream_stream,
        }[kind]
        return factory(
            f"/{self.service}/{method}",
            request_serializer=req_ser,
            response_deserializer=resp_deser,
        )

    def close(self) -> None:
        self.channel.close()


class DubboClient(_Client):
    impl = "dubbo"

    def __init__(self, port: int, service: str, **features: Any) -> None:
        dubbo = _dubbo()
        from dubbo.configs import ReferenceConfig

        self.client = dubbo.Client(
            ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{service}"),
            **_dubbo_client_settings(features),
        )

    def _multi_callable(self, kind, method, req_ser, resp_deser):
        factory = getattr(self.client, kind)  # unary / client_stream / server_stream / bidi_stream
        return factory(method, request_serializer=req_ser, response_deserializer=resp_deser)

    def close(self) -> None:
        self.client.close()


def make_client(
    impl: str,
    port: int,
    service: str = "org.apache.dubbo.samples.proto.Greeter",
    **features: Any,
):
    """A client of ``impl``; ``features`` are neutral settings (see :func:`client_settings`)."""
    if impl == "grpcio":
        return GrpcioClient(port, service, **features)
    if impl == "dubbo":
        return DubboClient(port, service, **features)
    raise ValueError(f"unknown implementation {impl!r}")


class Rig:
    """Servers and clients of one test; :meth:`close` (run by a fixture) stops them all."""

    def __init__(self, client_impl: str, server_impl: str) -> None:
        self.client_impl = client_impl
        self.server_impl = server_impl
        self._clients: list[Any] = []
        self._stops: list[Callable[[], None]] = []

    def serve(self, handlers: dict[str, tuple], **kwargs: Any) -> int:
        port, stop = start_server(self.server_impl, handlers, **kwargs)
        self._stops.append(stop)
        return port

    def client(
        self, port: int, service: str = "org.apache.dubbo.samples.proto.Greeter", **features: Any
    ):
        client = make_client(self.client_impl, port, service, **features)
        self._clients.append(client)
        return client

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` at :meth:`close`: after the clients close, and (like the servers'
        stops) in reverse order of registration."""
        self._stops.append(fn)

    def close(self) -> None:
        errors: list[BaseException] = []
        for close in [c.close for c in reversed(self._clients)] + list(reversed(self._stops)):
            try:
                _bounded(close, CLOSE_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - keep closing the rest, re-raised below
                errors.append(exc)
        self._clients.clear()
        self._stops.clear()
        if errors:
            raise errors[0]


CLOSE_TIMEOUT = 15.0


def _bounded(fn: Callable[[], None], timeout: float) -> None:
    """Run fn, but fail instead of hanging the suite when it does not return in time
    (a hung close/stop would otherwise outlive pytest-timeout, which fires only once)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, name=f"rig-close-{fn.__qualname__}", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise AssertionError(f"{fn.__qualname__}() did not return within {timeout:.0f} s")
    if outcome[0] is not None:
        raise outcome[0]


# --------------------------------------------------------------------------- call semantics
#
# Implementation-neutral names for the settings tests/test_call_semantics.py needs, each
# translated to grpcio's channel/server options or to dubbo's keyword arguments.
#
# Server ``features``:
#   compression              "gzip" / "deflate" / ...: compress replies
#   max_receive_message_size, max_send_message_size   bytes
#   max_concurrent_streams   advertised in SETTINGS
#   max_workers              handler threads; further calls queue
#   bounded_workers          handler threads, and a further call is refused at once
#                            (grpcio: maximum_concurrent_rpcs; dubbo: max_pending_calls=0)
#   keepalive_time, keepalive_timeout   seconds
#   tolerate_pings           grpcio: accept frequent client keepalive PINGs
# Client ``features``: compression, max_receive_message_size, max_send_message_size,
#   keepalive_time, keepalive_timeout, fast_reconnect (grpcio: 0.1 s reconnect backoff,
#   which is dubbo's default).

_GRPC_COMPRESSION = {
    "identity": grpc.Compression.NoCompression,
    "gzip": grpc.Compression.Gzip,
    "deflate": grpc.Compression.Deflate,
}

_GRPCIO_PING_TOLERANCE = [
    ("grpc.http2.min_ping_interval_without_data_ms", 100),
    ("grpc.http2.min_time_between_pings_ms", 100),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
]


def compression_arg(impl: str, name: str) -> Any:
    """An encoding name as ``impl`` takes it: ``grpc.Compression.Gzip`` or ``"gzip"``."""
    if impl == "grpcio":
        return _GRPC_COMPRESSION[name]
    return name


def status_code(impl: str, name: str) -> Any:
    """``grpc.StatusCode.X`` or ``dubbo.StatusCode.X``: what ``impl``'s context takes."""
    if impl == "grpcio":
        return getattr(grpc.StatusCode, name)
    return getattr(_dubbo().StatusCode, name)


def _message_size_options(features: dict[str, Any]) -> list[tuple[str, Any]]:
    options = []
    if "max_receive_message_size" in features:
        options.append(("grpc.max_receive_message_length", features["max_receive_message_size"]))
    if "max_send_message_size" in features:
        options.append(("grpc.max_send_message_length", features["max_send_message_size"]))
    return options


def _keepalive_options(features: dict[str, Any]) -> list[tuple[str, Any]]:
    options = []
    if "keepalive_time" in features:
        options.append(("grpc.keepalive_time_ms", int(features["keepalive_time"] * 1000)))
        options.append(("grpc.keepalive_permit_without_calls", 1))
        options.append(("grpc.http2.max_pings_without_data", 0))
    if "keepalive_timeout" in features:
        timeout_ms = int(features["keepalive_timeout"] * 1000)
        options.append(("grpc.keepalive_timeout_ms", timeout_ms))
        # grpc core also waits for a PING ack for ping_timeout (1 min by default)
        options.append(("grpc.http2.ping_timeout_ms", timeout_ms))
    return options


_SERVER_FEATURES = {
    "compression", "max_receive_message_size", "max_send_message_size",
    "max_concurrent_streams", "max_workers", "bounded_workers", "keepalive_time",
    "keepalive_timeout", "tolerate_pings",
}
_CLIENT_FEATURES = {
    "compression", "max_receive_message_size", "max_send_message_size", "keepalive_time",
    "keepalive_timeout", "fast_reconnect",
}


def _grpcio_server_settings(features: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(thread pool size, grpc.server keyword arguments)."""
    unknown = set(features) - _SERVER_FEATURES
    assert not unknown, f"unknown server features {unknown}"
    kwargs: dict[str, Any] = {}
    options = _message_size_options(features) + _keepalive_options(features)
    if "max_concurrent_streams" in features:
        options.append(("grpc.max_concurrent_streams", features["max_concurrent_streams"]))
    if features.get("tolerate_pings"):
        options.extend(_GRPCIO_PING_TOLERANCE)
    if "compression" in features:
        kwargs["compression"] = _GRPC_COMPRESSION[features["compression"]]
    max_workers = features.get("max_workers", 32)
    if "bounded_workers" in features:
        max_workers = features["bounded_workers"]
        kwargs["maximum_concurrent_rpcs"] = max_workers
    if options:
        kwargs["options"] = options
    return max_workers, kwargs


def _dubbo_server_settings(features: dict[str, Any]) -> dict[str, Any]:
    """dubbo.Server keyword arguments."""
    unknown = set(features) - _SERVER_FEATURES
    assert not unknown, f"unknown server features {unknown}"
    kwargs = {
        key: features[key]
        for key in ("compression", "max_receive_message_size", "max_send_message_size",
                    "max_concurrent_streams", "max_workers", "keepalive_time",
                    "keepalive_timeout")
        if key in features
    }
    if "bounded_workers" in features:
        kwargs["max_workers"] = features["bounded_workers"]
        kwargs["max_pending_calls"] = 0
    return kwargs


def _grpcio_client_settings(features: dict[str, Any]) -> tuple[list, dict[str, Any]]:
    """(channel options, grpc.insecure_channel keyword arguments)."""
    unknown = set(features) - _CLIENT_FEATURES
    assert not unknown, f"unknown client features {unknown}"
    options = _message_size_options(features) + _keepalive_options(features)
    if "keepalive_time" in features:
        # grpc core spaces PINGs without data by 5 min unless told otherwise
        interval_ms = int(features["keepalive_time"] * 1000)
        options += [
            ("grpc.http2.min_time_between_pings_ms", interval_ms),
            ("grpc.http2.min_ping_interval_without_data_ms", interval_ms),
        ]
    if features.get("fast_reconnect"):
        options += [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
    kwargs = {}
    if "compression" in features:
        kwargs["compression"] = _GRPC_COMPRESSION[features["compression"]]
    return options, kwargs


def _dubbo_client_settings(features: dict[str, Any]) -> dict[str, Any]:
    """dubbo.Client keyword arguments (fast_reconnect is dubbo's default behaviour)."""
    unknown = set(features) - _CLIENT_FEATURES
    assert not unknown, f"unknown client features {unknown}"
    settings = {
        key: features[key]
        for key in ("compression", "max_receive_message_size", "max_send_message_size",
                    "keepalive_time", "keepalive_timeout")
        if key in features
    }
    if "keepalive_time" in features:
        # Mirrors the grpcio adapter's grpc.keepalive_permit_without_calls=1.
        settings["keepalive_permit_without_calls"] = True
    return settings


def error_trailing_metadata(exc: BaseException) -> list[tuple[str, Any]]:
    """The trailing metadata of a failed call, from either client implementation."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "trailing_metadata"):
        return list(exc.trailing_metadata() or ())
    return list(exc.trailing_metadata or ())  # type: ignore[attr-defined]


def error_initial_metadata(exc: BaseException) -> list[tuple[str, Any]]:
    """The initial metadata of a failed call, from either client implementation."""
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "initial_metadata"):
        return list(exc.initial_metadata() or ())
    return list(exc.initial_metadata or ())  # type: ignore[attr-defined]


def status_details_bin(exc: BaseException) -> bytes | None:
    """The serialized ``google.rpc.Status`` of a failed call (``grpc-status-details-bin``).

    grpcio: read from the trailing metadata (what ``grpc_status.rpc_status.from_call``
    does); dubbo: ``RpcError.status_details``.
    """
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "trailing_metadata"):
        for key, value in exc.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                return value
        return None
    return exc.status_details  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- TCP proxy


class TcpProxy:
    """A loopback TCP proxy in one thread that counts bytes and can misbehave on command.

    ``pause()`` stops forwarding in both directions without closing anything (a peer
    that vanished without a FIN or RST, as behind a dead NAT); ``resume()`` undoes it.
    ``kill()`` closes every proxied connection now; new ones are still accepted.
    ``close()`` stops the proxy for good.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        import selectors
        import socket

        self._socket = socket
        self.target = (target_host, target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.bytes_up = 0  # client -> server
        self.bytes_down = 0  # server -> client
        self.connections = 0
        self._lock = threading.Lock()
        self._paused = False
        self._pairs: dict[Any, Any] = {}  # socket -> its peer socket
        self._commands: list[str] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._upstream: set[Any] = set()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="proxy-tcp", daemon=True)
        self._thread.start()

    # -- commands (any thread) -----------------------------------------------------

    def _command(self, name: str) -> None:
        with self._lock:
            self._commands.append(name)
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def pause(self) -> None:
        self._command("pause")

    def resume(self) -> None:
        self._command("resume")

    def kill(self) -> None:
        self._command("kill")

    def close(self) -> None:
        if self._stopped:
            return
        self._command("stop")
        self._thread.join(5)
        self._stopped = True
        for s in (self._wake_r, self._wake_w):
            s.close()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.bytes_up, self.bytes_down

    def reset_counts(self) -> None:
        with self._lock:
            self.bytes_up = self.bytes_down = 0

    # -- the proxy thread ----------------------------------------------------------

    def _set_reading(self, on: bool) -> None:
        import selectors

        for sock in list(self._pairs):
            try:
                if on:
                    self._selector.register(sock, selectors.EVENT_READ)
                else:
                    self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass

    def _drop(self, sock: Any) -> None:
        peer = self._pairs.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self._pairs.pop(s, None)
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            try:
                s.close()
            except OSError:
                pass

    def _run(self) -> None:
        import selectors

        socket = self._socket
        try:
            while True:
                for key, _ in self._selector.select(timeout=1.0):
                    sock = key.fileobj
                    if sock is self._wake_r:
                        sock.recv(1024)
                        with self._lock:
                            commands, self._commands = self._commands, []
                        for command in commands:
                            if command == "stop":
                                return
                            if command == "pause" and not self._paused:
                                self._paused = True
                                self._set_reading(False)
                            elif command == "resume" and self._paused:
                                self._paused = False
                                self._set_reading(True)
                            elif command == "kill":
                                for s in list(self._pairs):
                                    self._drop(s)
                    elif sock is self.listener:
                        try:
                            client, _ = self.listener.accept()
                        except OSError:
                            continue
                        try:
                            upstream = socket.create_connection(self.target, timeout=2)
                        except OSError:
                            client.close()
                            continue
                        for s in (client, upstream):
                            s.setblocking(True)
                            s.settimeout(None)
                            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        self._upstream.add(upstream)
                        self._pairs[client] = upstream
                        self._pairs[upstream] = client
                        with self._lock:
                            self.connections += 1
                        if not self._paused:
                            self._selector.register(client, selectors.EVENT_READ)
                            self._selector.register(upstream, selectors.EVENT_READ)
                    else:
                        if sock not in self._pairs:
                            continue
                        try:
                            data = sock.recv(65536)
                        except OSError:
                            data = b""
                        if not data:
                            self._drop(sock)
                            continue
                        peer = self._pairs[sock]
                        with self._lock:  # counted before the peer can see the bytes
                            if sock in self._upstream:
                                self.bytes_down += len(data)
                            else:
                                self.bytes_up += len(data)
                        try:
                            peer.sendall(data)
                        except OSError:
                            self._drop(sock)
        finally:
            for s in list(self._pairs):
                self._drop(s)
            self._selector.close()
            self.listener.close()


class Overlap:
    """Counts handler calls running at once; ``peak`` is the most seen together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    @contextlib.contextmanager
    def running(self):
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            with self._lock:
                self.now -= 1
