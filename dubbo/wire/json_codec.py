"""Protobuf messages as JSON (proto3's JSON mapping, protobuf's ``json_format``), and how
to find a method's message classes when all we have is its handler.

``application/grpc+json`` calls and curl-style HTTP unary calls carry JSON; a server can
turn it into the request message only when it knows the method's message classes.
They come, in this order, from a request deserializer that is a message class's bound
``FromString``, from the service's ``file_descriptor``, from protobuf's default pool
(every imported ``_pb2`` module adds its files there), from the built-in services' pool,
and last from calling the request deserializer on ``b""`` (any protobuf message parses
from no bytes).

Sans-I/O; protobuf is imported on first use, so ``import dubbo`` works without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = [
    "JSON_CONTENT_TYPE",
    "GRPC_JSON_CONTENT_TYPE",
    "is_message_class",
    "message_to_json",
    "json_to_message",
    "serializer",
    "deserializer",
    "message_class",
    "method_types",
]

JSON_CONTENT_TYPE = "application/json"
GRPC_JSON_CONTENT_TYPE = "application/grpc+json"


def _message_base() -> type:
    from google.protobuf.message import Message

    return Message


def is_message_class(value: Any) -> bool:
    """True for a protobuf message class (not an instance)."""
    try:
        return isinstance(value, type) and issubclass(value, _message_base())
    except ImportError:
        return False


def message_to_json(message: Any) -> bytes:
    """``message`` as compact proto3 JSON (lowerCamelCase names, defaults left out), as
    Dubbo Java's JsonFormat printer writes it."""
    from google.protobuf import json_format

    return json.dumps(json_format.MessageToDict(message), separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def json_to_message(data: bytes | str, cls: Any, ignore_unknown_fields: bool = True) -> Any:
    """Parse proto3 JSON into a new ``cls``; empty input is the empty message.

    Raises ``ValueError`` saying what is wrong. Unknown fields are ignored by default,
    as Dubbo Java's parser does (a newer client may send fields we do not know yet)."""
    from google.protobuf import json_format

    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"request body is not UTF-8: {exc}") from None
    else:
        text = data
    message = cls()
    if not text.strip():
        return message
    try:
        json_format.Parse(text, message, ignore_unknown_fields=ignore_unknown_fields)
    except json_format.ParseError as exc:
        raise ValueError(str(exc)) from None
    return message


def serializer() -> Callable[[Any], bytes]:
    """A request/response serializer writing messages as JSON (for
    ``application/grpc+json`` calls)."""
    return message_to_json


def deserializer(cls: Any, ignore_unknown_fields: bool = True) -> Callable[[bytes], Any]:
    """A deserializer parsing JSON into ``cls`` messages."""
    def parse(data: bytes) -> Any:
        return json_to_message(data, cls, ignore_unknown_fields)
    return parse


def message_class(descriptor: Any) -> Any:
    """The class of a message ``Descriptor`` (protobuf 4.21 to 7.x)."""
    from google.protobuf import message_factory

    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is not None:  # protobuf >= 4.22
        return get_class(descriptor)
    factory: Any = message_factory.MessageFactory(descriptor.file.pool)  # 4.21
    return factory.GetPrototype(descriptor)


def _service_in_file(file_descriptor: Any, service_name: str) -> Any:
    """The ``ServiceDescriptor`` named ``service_name`` from what
    ``RpcServiceHandler(file_descriptor=...)`` holds (a FileDescriptor, something with
    one as ``.file``, or a serialized FileDescriptorProto); None if not there."""
    if isinstance(file_descriptor, (bytes, bytearray, memoryview)):
        file_descriptor = _load_serialized(bytes(file_descriptor))
        if file_descriptor is None:
            return None
    if not hasattr(file_descriptor, "services_by_name"):
        file_descriptor = getattr(file_descriptor, "file", None)
    for service in getattr(file_descriptor, "services_by_name", {}).values():
        if service.full_name == service_name:
            return service
    return None


def _load_serialized(data: bytes) -> Any:
    """A FileDescriptor for a serialized FileDescriptorProto: protobuf's default pool's
    copy if it has that file, else one in a pool of its own (its imports taken from
    the default pool)."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    proto = descriptor_pb2.FileDescriptorProto.FromString(data)
    default = descriptor_pool.Default()
    try:
        return default.FindFileByName(proto.name)
    except KeyError:
        pass
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:  # the imports first; each file once
        if name in added:
            return
        added.add(name)
        dep = descriptor_pb2.FileDescriptorProto()
        default.FindFileByName(name).CopyToProto(dep)
        for inner in dep.dependency:
            add(inner)
        pool.Add(dep)

    try:
        for name in proto.dependency:
            add(name)
        pool.Add(proto)
        return pool.FindFileByName(proto.name)
    except (KeyError, TypeError):
        return None


def _find_service(service_name: str, file_descriptor: Any) -> Any:
    if file_descriptor is not None:
        try:
            found = _service_in_file(file_descriptor, service_name)
        except Exception:  # a malformed descriptor: try the pools
            found = None
        if found is not None:
            return found
    from google.protobuf import descriptor_pool

    pools = [descriptor_pool.Default()]
    if service_name.startswith("grpc."):
        from ..services._protobuf import descriptor_pool as builtin_pool

        pools.append(builtin_pool())
    for pool in pools:
        try:
            return pool.FindServiceByName(service_name)
        except KeyError:
            continue
    return None


def method_types(service_name: str, method_name: str,
                 request_deserializer: Callable[[bytes], Any] | None,
                 file_descriptor: Any = None) -> tuple[Any, Any]:
    """``(request class, response class)`` of a method, each ``None`` when unknown.

    Cost: descriptor lookups, once per method; callers cache the answer.
    """
    try:
        message = _message_base()
    except ImportError:  # no protobuf: no JSON
        return None, None
    request_cls = response_cls = None
    owner = getattr(request_deserializer, "__self__", None)
    if is_message_class(owner) and getattr(request_deserializer, "__name__", "") == "FromString":
        request_cls = owner
    service = _find_service(service_name, file_descriptor)
    method = None if service is None else service.methods_by_name.get(method_name)
    if method is not None:
        try:
            if request_cls is None:
                request_cls = message_class(method.input_type)
            response_cls = message_class(method.output_type)
        except Exception:  # pragma: no cover - a pool protobuf cannot make classes of
            pass
    if request_cls is None and request_deserializer is not None:
        try:
            probe = request_deserializer(b"")
        except Exception:
            probe = None
        if isinstance(probe, message):
            request_cls = type(probe)
    return request_cls, response_cls
