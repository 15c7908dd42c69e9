"""gRPC server reflection (``grpc.reflection.v1`` and ``v1alpha``): tools such as
grpcurl, grpcui, Postman and ``python -m dubbo`` ask a server which services it has
and fetch their .proto descriptors, so they can call it without the .proto files.

``dubbo.Server(config, reflection=True)`` serves it. The descriptors come from each
service's ``RpcServiceHandler(..., file_descriptor=...)`` (generated code passes its
own); without one, from protobuf's default pool (where imported ``_pb2`` modules put
theirs), as grpcio-reflection does. Each file is sent with every file it imports,
transitively. Extension queries are answered from the same files and the default pool.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..proxy.handlers import RpcMethodHandler, RpcServiceHandler
from ..status import StatusCode
from ._descriptors import FILES as BUILTIN_FILES
from ._protobuf import message_class

__all__ = ["MESSAGES", "SERVICE_NAMES", "ReflectionServicer"]

log = logging.getLogger("dubbo.reflection")

SERVICE_NAMES = ("grpc.reflection.v1.ServerReflection",
                 "grpc.reflection.v1alpha.ServerReflection")
# grpc.reflection.v1's message classes, as attributes of this module made on first
# use: ``from dubbo.services.reflection import ServerReflectionRequest``.
MESSAGES = ("ServerReflectionRequest", "ServerReflectionResponse", "ExtensionRequest",
            "FileDescriptorResponse", "ExtensionNumberResponse", "ListServiceResponse",
            "ServiceResponse", "ErrorResponse")


def __getattr__(name: str) -> Any:
    if name in MESSAGES:
        return message_class(f"grpc.reflection.v1.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _FileIndex:
    """Serialized FileDescriptorProtos by file name, and which file defines each
    symbol and extension. Files not indexed are looked up in protobuf's default pool.
    Not thread-safe: ReflectionServicer holds its lock around it."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.imports: dict[str, list[str]] = {}
        self.symbols: dict[str, str] = {}  # full name -> file name
        self.extensions: dict[str, dict[int, str]] = {}  # extendee -> number -> file

    def add_serialized(self, data: bytes) -> str:
        """Index one serialized FileDescriptorProto; its file name."""
        from google.protobuf import descriptor_pb2

        proto = descriptor_pb2.FileDescriptorProto.FromString(data)
        if proto.name in self.files:
            return str(proto.name)
        self.files[proto.name] = bytes(data)
        self.imports[proto.name] = list(proto.dependency)
        prefix = f"{proto.package}." if proto.package else ""
        self._index_scope(proto.name, prefix, proto.message_type, proto.enum_type,
                          proto.extension)
        for service in proto.service:
            self.symbols[prefix + service.name] = proto.name
            for method in service.method:
                self.symbols[f"{prefix}{service.name}.{method.name}"] = proto.name
        return str(proto.name)

    def _index_scope(self, file: str, prefix: str, messages: Iterable[Any],
                     enums: Iterable[Any], extensions: Iterable[Any]) -> None:
        for enum in enums:
            self.symbols[prefix + enum.name] = file
            for value in enum.value:  # C++ scoping: enum values are the enum's siblings
                self.symbols[prefix + value.name] = file
        for extension in extensions:
            self.symbols[prefix + extension.name] = file
            extendee = extension.extendee.lstrip(".")
            self.extensions.setdefault(extendee, {})[extension.number] = file
        for message in messages:
            name = prefix + message.name
            self.symbols[name] = file
            for field in message.field:
                self.symbols[f"{name}.{field.name}"] = file
            for oneof in message.oneof_decl:
                self.symbols[f"{name}.{oneof.name}"] = file
            self._index_scope(file, name + ".", message.nested_type, message.enum_type,
                              message.extension)

    def add_descriptor(self, descriptor: Any) -> str:
        """Index a protobuf ``FileDescriptor`` and the files it imports."""
        if descriptor.name in self.files:
            return str(descriptor.name)
        data = getattr(descriptor, "serialized_pb", None)
        if not data:
            from google.protobuf import descriptor_pb2

            proto = descriptor_pb2.FileDescriptorProto()
            descriptor.CopyToProto(proto)
            data = proto.SerializeToString()
        name = self.add_serialized(data)
        for dependency in descriptor.dependencies:
            self.add_descriptor(dependency)
        return name

    def add(self, file_descriptor: Any) -> str:
        """Index what ``RpcServiceHandler(file_descriptor=...)`` accepts: a
        FileDescriptor (or anything with one as ``.file``, e.g. a ServiceDescriptor)
        or a serialized FileDescriptorProto."""
        if isinstance(file_descriptor, (bytes, bytearray, memoryview)):
            return self.add_serialized(bytes(file_descriptor))
        if not hasattr(file_descriptor, "dependencies"):
            file_descriptor = file_descriptor.file
        return self.add_descriptor(file_descriptor)

    # -- queries; None when nothing is known -------------------------------------

    def file_by_name(self, name: str) -> str | None:
        if name in self.files:
            return name
        return self._from_default_pool(lambda pool: pool.FindFileByName(name))

    def file_containing_symbol(self, symbol: str) -> str | None:
        if symbol in self.symbols:
            return self.symbols[symbol]
        return self._from_default_pool(lambda pool: pool.FindFileContainingSymbol(symbol))

    def file_containing_extension(self, extendee: str, number: int) -> str | None:
        file = self.extensions.get(extendee, {}).get(number)
        if file is not None:
            return file

        def find(pool: Any) -> Any:
            extension = pool.FindExtensionByNumber(pool.FindMessageTypeByName(extendee),
                                                   number)
            return extension.file
        return self._from_default_pool(find)

    def extension_numbers(self, extendee: str) -> list[int] | None:
        numbers = set(self.extensions.get(extendee, {}))
        from google.protobuf import descriptor_pool

        try:
            pool = descriptor_pool.Default()
            numbers.update(e.number for e in pool.FindAllExtensions(
                pool.FindMessageTypeByName(extendee)))
        except KeyError:
            if extendee not in self.symbols:
                return None
        return sorted(numbers)

    def with_imports(self, name: str) -> list[bytes]:
        """``name``'s file first, then every file it imports, transitively."""
        order: list[str] = []
        pending = [name]
        while pending:
            file = pending.pop(0)
            if file in order:
                continue
            if file not in self.files and self.file_by_name(file) is None:
                log.warning("reflection: %s imports %s, which is nowhere to be found",
                            name, file)
                continue
            order.append(file)
            pending.extend(self.imports[file])
        return [self.files[file] for file in order]

    def _from_default_pool(self, find: Callable[[Any], Any]) -> str | None:
        from google.protobuf import descriptor_pool

        try:
            descriptor = find(descriptor_pool.Default())
        except KeyError:
            return None
        return self.add_descriptor(descriptor)


class ReflectionServicer:
    """Answers ServerReflectionInfo for the services ``services()`` returns (called
    on each request, so it sees the server's services as they are)."""

    def __init__(self, services: Callable[[], Iterable[RpcServiceHandler]]) -> None:
        self._services = services
        self._lock = threading.Lock()  # guards _index and _indexed
        self._index = _FileIndex()
        self._indexed: set[str] = set()  # service names whose files are in _index

    def _service_names(self) -> list[str]:
        """Every served service, indexing the files of those not seen before."""
        handlers = list(self._services())
        names = sorted({handler.service_name for handler in handlers})
        with self._lock:
            if not self._index.files:
                for data in BUILTIN_FILES.values():
                    self._index.add_serialized(data)
            for handler in handlers:
                if handler.service_name in self._indexed:
                    continue
                self._indexed.add(handler.service_name)
                try:
                    if handler.file_descriptor is not None:
                        self._index.add(handler.file_descriptor)
                    elif self._index.file_containing_symbol(handler.service_name) is None:
                        log.debug("reflection: no descriptor for %s", handler.service_name)
                except Exception:
                    log.exception("reflection: the file descriptor of %s is unusable",
                                  handler.service_name)
        return names

    def ServerReflectionInfo(self, requests: Iterator[Any],  # noqa: N802 (the RPC's name)
                             context: Any, package: str) -> Iterator[Any]:
        """One response per request, in order."""
        response_class = message_class(f"{package}.ServerReflectionResponse")
        for request in requests:
            response = response_class(valid_host=request.host)
            response.original_request.CopyFrom(request)
            self._answer(request, response)
            yield response

    def _answer(self, request: Any, response: Any) -> None:
        kind = request.WhichOneof("message_request")
        names = self._service_names()  # also indexes new services' files first
        with self._lock:
            index = self._index
            if kind == "list_services":
                for name in names:
                    response.list_services_response.service.add(name=name)
                return
            if kind == "file_by_filename":
                file = index.file_by_name(request.file_by_filename)
                what = f"file {request.file_by_filename!r}"
            elif kind == "file_containing_symbol":
                file = index.file_containing_symbol(request.file_containing_symbol)
                what = f"symbol {request.file_containing_symbol!r}"
            elif kind == "file_containing_extension":
                ask = request.file_containing_extension
                file = index.file_containing_extension(ask.containing_type,
                                                       ask.extension_number)
                what = f"extension {ask.extension_number} of {ask.containing_type!r}"
            elif kind == "all_extension_numbers_of_type":
                numbers = index.extension_numbers(request.all_extension_numbers_of_type)
                if numbers is not None:
                    answer = response.all_extension_numbers_response
                    answer.base_type_name = request.all_extension_numbers_of_type
                    answer.extension_number.extend(numbers)
                    return
                file, what = None, f"type {request.all_extension_numbers_of_type!r}"
            else:
                response.error_response.error_code = int(StatusCode.INVALID_ARGUMENT)
                response.error_response.error_message = "no request in the message"
                return
            if file is None:
                response.error_response.error_code = int(StatusCode.NOT_FOUND)
                response.error_response.error_message = f"{what} not found"
                return
            response.file_descriptor_response.file_descriptor_proto.extend(
                index.with_imports(file))

    def service_handlers(self) -> list[RpcServiceHandler]:
        """``grpc.reflection.v1.ServerReflection`` and its v1alpha twin."""
        handlers = []
        for service in SERVICE_NAMES:
            package = service.rsplit(".", 1)[0]
            handlers.append(RpcServiceHandler(service, [RpcMethodHandler.bi_stream(
                _bind(self.ServerReflectionInfo, package), "ServerReflectionInfo",
                _deserializer(f"{package}.ServerReflectionRequest"), _serialize)]))
        return handlers


def _bind(method: Callable[..., Iterator[Any]], package: str) -> Callable[..., Iterator[Any]]:
    def handler(requests: Iterator[Any], context: Any) -> Iterator[Any]:
        return method(requests, context, package)
    return handler


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _deserializer(full_name: str) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        return message_class(full_name).FromString(data)
    return deserialize
