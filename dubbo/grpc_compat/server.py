"""grpcio's server-side handler API on ``dubbo.Server``: what grpcio-tools'
``add_XServicer_to_server`` passes (``grpc.method_handlers_generic_handler`` and the
``grpc.*_rpc_method_handler`` tuples) becomes our ``RpcServiceHandler``.

Everything here is duck-typed: grpcio need not be installed to serve, only to import
the generated ``x_pb2_grpc.py`` (which imports grpc itself).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ..proxy.handlers import CallType, RpcMethodHandler, RpcServiceHandler
from ..status import RpcError, StatusCode

if TYPE_CHECKING:  # pragma: no cover
    from ..server.context import ServicerContext
    from ..server.server import Server
    from ..wire.metadata import RequestHead

__all__ = ["HandlerCallDetails", "method_handler", "service_handler", "add_generic_rpc_handlers",
           "generic_lookup"]

log = logging.getLogger("dubbo.server")


class HandlerCallDetails(NamedTuple):
    """What grpcio gives ``GenericRpcHandler.service()``: the method path and metadata."""

    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


def _status_error(context: ServicerContext, exc: Exception) -> RpcError | None:
    """grpcio ends a call whose handler raised with the code it set, if any (so the
    generated servicer base's ``set_code(UNIMPLEMENTED); raise NotImplementedError``
    reaches the client as UNIMPLEMENTED, not UNKNOWN)."""
    code = context.code
    if code is None or code is StatusCode.OK:
        return None
    log.debug("handler %s raised %r after set_code(%s)", context.method(), exc, code.name)
    error = RpcError(code, context.details)
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def _set_code_wins(context: ServicerContext) -> Iterator[None]:
    """Raise what the handler raised, or the code it set before raising (``_status_error``)."""
    try:
        yield
    except RpcError:
        raise
    except Exception as exc:
        error = _status_error(context, exc)
        if error is None:
            raise
        raise error from exc


def _unary_response(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def behavior(request: Any, context: ServicerContext) -> Any:
        with _set_code_wins(context):
            return fn(request, context)
    return behavior


def _stream_response(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Iterator[Any]]:
    def behavior(request: Any, context: ServicerContext) -> Iterator[Any]:
        with _set_code_wins(context):
            yield from fn(request, context)
    return behavior


_KINDS = {
    (False, False): (CallType.UNARY, "unary_unary"),
    (True, False): (CallType.CLIENT_STREAM, "stream_unary"),
    (False, True): (CallType.SERVER_STREAM, "unary_stream"),
    (True, True): (CallType.BI_STREAM, "stream_stream"),
}


def method_handler(method_name: str, handler: Any) -> RpcMethodHandler:
    """Our handler for a ``grpc.RpcMethodHandler`` (any object with its fields:
    ``request_streaming``, ``response_streaming``, ``unary_unary`` ...,
    ``request_deserializer``, ``response_serializer``). Its behaviour always gets the
    context, as grpcio's does."""
    if isinstance(handler, RpcMethodHandler):
        return handler
    streaming = (bool(handler.request_streaming), bool(handler.response_streaming))
    call_type, attribute = _KINDS[streaming]
    fn = getattr(handler, attribute, None)
    if not callable(fn):
        raise TypeError(f"method {method_name!r}: a {attribute} handler has no {attribute} "
                        "behaviour")
    wrap = _stream_response if call_type.response_streaming else _unary_response
    return RpcMethodHandler(call_type, wrap(fn), method_name,
                            getattr(handler, "request_deserializer", None),
                            getattr(handler, "response_serializer", None),
                            takes_context=True)


def service_handler(service_name: str, method_handlers: Mapping[str, Any]) -> RpcServiceHandler:
    """``Server.add_registered_method_handlers``' arguments as one of our services;
    ``method_handlers`` is keyed by the method's name (or its ``/service/method`` path)."""
    handlers = {}
    for name, handler in method_handlers.items():
        name = name.rpartition("/")[2]
        handlers[name] = method_handler(name, handler)
    return RpcServiceHandler(service_name, handlers)


def _static_services(handler: Any) -> list[RpcServiceHandler] | None:
    """The services of a handler whose methods are known up front (what
    ``grpc.method_handlers_generic_handler`` makes: a dict by ``/service/method``),
    or ``None`` for one that must be asked per call."""
    table = getattr(handler, "_method_handlers", None)
    if type(handler).__name__ != "DictionaryGenericHandler" or not isinstance(table, Mapping):
        return None
    by_service: dict[str, dict[str, Any]] = {}
    for path, method in table.items():
        service, _, name = str(path).lstrip("/").rpartition("/")
        if not service or not name:
            return None
        by_service.setdefault(service, {})[name] = method
    return [service_handler(service, methods) for service, methods in by_service.items()]


def add_generic_rpc_handlers(server: Server, generic_rpc_handlers: Iterable[Any]) -> None:
    """Resolve what can be resolved now into services; keep the rest, asked per call."""
    dynamic = []
    for handler in generic_rpc_handlers:
        if not callable(getattr(handler, "service", None)):
            raise TypeError(f"expected a grpc.GenericRpcHandler (with service()), got "
                            f"{handler!r}")
        services = _static_services(handler)
        if services is None:
            dynamic.append(handler)
        else:
            for service in services:
                server.add_service(service)
    if dynamic:
        server.generic_handlers = (*server.generic_handlers, *dynamic)


def generic_lookup(handlers: Iterable[Any], head: RequestHead) -> RpcMethodHandler | None:
    """Ask each ``GenericRpcHandler`` in turn for a method's handler, as grpcio does on
    every call; the first answer wins."""
    details = HandlerCallDetails(head.path, tuple(head.metadata))
    for generic in handlers:
        try:
            found = generic.service(details)
        except Exception:
            log.exception("%r.service() raised for %s", generic, head.path)
            continue
        if found is not None:
            return method_handler(head.method, found)
    return None
