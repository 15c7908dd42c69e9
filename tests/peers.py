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
    **opts: Any,
) -> tuple[int, Callable[[], None]]:
    """Serve ``handlers`` on 127.0.0.1 with a free port; returns ``(port, stop)``.

    ``handlers`` maps a method name to ``(kind, fn)`` or
    ``(kind, fn, request_deserializer, response_serializer)``; the 2-tuple form uses the
    ``request_deserializer``/``response_serializer`` given here (None = raw bytes).
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
        server = grpc.server(ThreadPoolExecutor(max_workers=32), **opts)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, method_handlers),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        assert port, "grpcio could not bind 127.0.0.1:0"
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
            ServiceConfig(service_handler, host="127.0.0.1", port=0, **opts)
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

    def _bind(self, kind, method, req_ser, resp_deser):
        multi = self._multi_callable(kind, method, req_ser, resp_deser)

        def call(request, timeout=None, metadata=None):
            return multi(request, **_call_kwargs(timeout, metadata))

        return call


class GrpcioClient(_Client):
    def __init__(self, port: int, service: str) -> None:
        self.service = service
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

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
    def __init__(self, port: int, service: str) -> None:
        dubbo = _dubbo()
        from dubbo.configs import ReferenceConfig

        self.client = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{service}"))

    def _multi_callable(self, kind, method, req_ser, resp_deser):
        factory = getattr(self.client, kind)  # unary / client_stream / server_stream / bidi_stream
        return factory(method, request_serializer=req_ser, response_deserializer=resp_deser)

    def close(self) -> None:
        self.client.close()


def make_client(impl: str, port: int, service: str = "org.apache.dubbo.samples.proto.Greeter"):
    if impl == "grpcio":
        return GrpcioClient(port, service)
    if impl == "dubbo":
        return DubboClient(port, service)
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

    def client(self, port: int, service: str = "org.apache.dubbo.samples.proto.Greeter"):
        client = make_client(self.client_impl, port, service)
        self._clients.append(client)
        return client

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
