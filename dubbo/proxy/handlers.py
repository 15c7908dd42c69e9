"""How a service declares its methods: one ``RpcMethodHandler`` per method."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CallType", "RpcMethodHandler", "RpcServiceHandler"]

Serializer = Callable[[Any], bytes]
Deserializer = Callable[[bytes], Any]


class CallType(enum.Enum):
    UNARY = "unary"
    CLIENT_STREAM = "client_stream"
    SERVER_STREAM = "server_stream"
    BI_STREAM = "bi_stream"

    @property
    def request_streaming(self) -> bool:
        return self in (CallType.CLIENT_STREAM, CallType.BI_STREAM)

    @property
    def response_streaming(self) -> bool:
        return self in (CallType.SERVER_STREAM, CallType.BI_STREAM)


def _takes_context(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` wants the call context: its second positional parameter is named
    ``context`` or has no default (``def hi(request, prefix=b"hi ")`` keeps its default),
    or it takes ``*args`` (a decorator's wrapper, which grpcio would call with two)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2:
        second = positional[1]
        return second.name == "context" or second.default is second.empty
    return any(p.kind is p.VAR_POSITIONAL for p in params)


@dataclass(frozen=True)
class RpcMethodHandler:
    """One method of a service: its behaviour, call type and (de)serializers.

    Without serializers the handler sees and returns ``bytes``.
    """

    call_type: CallType
    behavior: Callable[..., Any]
    method_name: str
    request_deserializer: Deserializer | None = None
    response_serializer: Serializer | None = None
    takes_context: bool = False

    @classmethod
    def _make(cls, call_type: CallType, fn: Callable[..., Any], method_name: str | None,
              request_deserializer: Deserializer | None,
              response_serializer: Serializer | None) -> RpcMethodHandler:
        if not callable(fn):
            raise TypeError(f"handler for {method_name or call_type.value} is not callable")
        name = method_name or getattr(fn, "__name__", None)
        if not name:
            raise ValueError("method_name is required for a handler without a __name__")
        return cls(call_type, fn, name, request_deserializer, response_serializer,
                   _takes_context(fn))

    @classmethod
    def unary(cls, method: Callable[..., Any], method_name: str | None = None,
              request_deserializer: Deserializer | None = None,
              response_serializer: Serializer | None = None) -> RpcMethodHandler:
        """``method(request[, context]) -> response``."""
        return cls._make(CallType.UNARY, method, method_name, request_deserializer,
                         response_serializer)

    @classmethod
    def client_stream(cls, method: Callable[..., Any], method_name: str | None = None,
                      request_deserializer: Deserializer | None = None,
                      response_serializer: Serializer | None = None) -> RpcMethodHandler:
        """``method(request_iterator[, context]) -> response``."""
        return cls._make(CallType.CLIENT_STREAM, method, method_name, request_deserializer,
                         response_serializer)

    @classmethod
    def server_stream(cls, method: Callable[..., Any], method_name: str | None = None,
                      request_deserializer: Deserializer | None = None,
                      response_serializer: Serializer | None = None) -> RpcMethodHandler:
        """``method(request[, context]) -> iterable of responses``."""
        return cls._make(CallType.SERVER_STREAM, method, method_name, request_deserializer,
                         response_serializer)

    @classmethod
    def bi_stream(cls, method: Callable[..., Any], method_name: str | None = None,
                  request_deserializer: Deserializer | None = None,
                  response_serializer: Serializer | None = None) -> RpcMethodHandler:
        """``method(request_iterator[, context]) -> iterable of responses``."""
        return cls._make(CallType.BI_STREAM, method, method_name, request_deserializer,
                         response_serializer)

    bidi_stream = bi_stream


class RpcServiceHandler:
    """A named service and its methods, given as a dict (key: method name) or a list.

    ``file_descriptor`` (a protobuf ``FileDescriptor``, or a serialized
    ``FileDescriptorProto``) describes the service's .proto file for reflection;
    generated code passes its own.
    """

    def __init__(self, service_name: str,
                 method_handlers: Mapping[str, RpcMethodHandler] | Iterable[RpcMethodHandler],
                 file_descriptor: Any = None) -> None:
        if not service_name or "/" in service_name:
            raise ValueError(f"invalid service name {service_name!r}")
        self.service_name = service_name
        if isinstance(method_handlers, Mapping):
            handlers = dict(method_handlers)
        else:
            handlers = {h.method_name: h for h in method_handlers}
        for name, handler in handlers.items():
            if not isinstance(handler, RpcMethodHandler):
                raise TypeError(f"method {name!r}: expected an RpcMethodHandler, got {handler!r}")
        self.method_handlers: dict[str, RpcMethodHandler] = handlers
        self.file_descriptor = file_descriptor

    def __repr__(self) -> str:
        return f"RpcServiceHandler({self.service_name!r}, methods={sorted(self.method_handlers)})"
