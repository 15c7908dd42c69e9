"""What the ``x_dubbo.py`` modules that ``python -m dubbo.protoc`` writes use at run time.

Generated code imports only this module (and the protobuf modules of its .proto), so
the library may move its internals without regenerating anyone's code. The protocols
below are what a generated stub promises about a call; the client's real call objects
satisfy them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from ..client import Client
from ..server import Server, ServicerContext
from ..status import RpcError, StatusCode
from ..wire.metadata import MetadataLike
from .handlers import RpcMethodHandler, RpcServiceHandler

__all__ = [
    "Call",
    "Client",
    "Metadata",
    "ResponseStream",
    "RpcMethodHandler",
    "RpcServiceHandler",
    "Server",
    "ServicerContext",
    "check_service",
    "serializer",
    "unimplemented",
]

Metadata = MetadataLike
T_co = TypeVar("T_co", covariant=True)


class Call(Protocol):
    """A finished call as ``with_call=True`` returns it next to the reply."""

    def initial_metadata(self) -> list[tuple[str, str | bytes]]: ...

    def trailing_metadata(self) -> list[tuple[str, str | bytes]] | None: ...

    def code(self) -> StatusCode | None: ...

    def details(self) -> str | None: ...


class ResponseStream(Iterator[T_co], Protocol):
    """The replies of a server-stream or bidi call, which is also the call itself:
    iterate it for the replies; ``cancel()`` ends the call early."""

    def initial_metadata(self) -> list[tuple[str, str | bytes]]: ...

    def trailing_metadata(self) -> list[tuple[str, str | bytes]] | None: ...

    def code(self) -> StatusCode | None: ...

    def details(self) -> str | None: ...

    def cancel(self) -> bool: ...


def serializer(message_type: type[Any], what: str) -> Callable[[Any], bytes]:
    """A serializer that refuses anything but ``message_type``.

    Without the check a wrong message of another type would serialize to bytes the
    peer parses as garbage (protobuf decodes any message as any other); with it the
    mistake is a TypeError naming the method, before anything is sent.
    """

    def serialize(message: Any) -> bytes:
        if not isinstance(message, message_type):
            raise TypeError(f"{what}: expected {message_type.DESCRIPTOR.full_name}, "
                            f"got {type(message).__module__}.{type(message).__qualname__}")
        data: bytes = message.SerializeToString()
        return data

    return serialize


def unimplemented(service: str, method: str) -> RpcError:
    """The error a servicer method that was not overridden ends its call with."""
    return RpcError(StatusCode.UNIMPLEMENTED, f"Method not implemented: /{service}/{method}")


def check_service(client: Client, service: str, stub: str) -> None:
    """A stub only fits a client of its own service: say so now rather than fail every
    call with UNIMPLEMENTED (the client puts its own service name in every path)."""
    reference = getattr(client, "reference", None)
    named = getattr(reference, "service", None)
    if named != service:
        raise ValueError(f"{stub} calls {service}, but the client is for {named!r}: "
                         f"use ReferenceConfig.from_url('tri://host:port/{service}')")
