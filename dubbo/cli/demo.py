"""The demo service ``python -m dubbo serve`` runs: ``dubbo.demo.Greeter`` with a unary
and a server-streaming method. Its .proto is built here at run time, so the demo needs
only the package (and protobuf), and reflection serves it like any generated code::

    syntax = "proto3";
    package dubbo.demo;
    message HelloRequest { string name = 1; }
    message HelloReply { string message = 1; }
    service Greeter {
      rpc SayHello (HelloRequest) returns (HelloReply);
      rpc SayHelloStream (HelloRequest) returns (stream HelloReply);
    }
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..proxy.handlers import RpcMethodHandler, RpcServiceHandler
from ..status import RpcError, StatusCode
from ..wire.json_codec import message_class

__all__ = ["SERVICE_NAME", "file_descriptor", "service_handler"]

SERVICE_NAME = "dubbo.demo.Greeter"
STREAM_REPLIES = 3


def _file_proto() -> Any:
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto(name="dubbo/demo/greeter.proto",
                                               package="dubbo.demo", syntax="proto3")
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    for message, field in (("HelloRequest", "name"), ("HelloReply", "message")):
        proto.message_type.add(name=message).field.add(
            name=field, number=1, type=string, label=optional, json_name=field)
    service = proto.service.add(name="Greeter")
    service.method.add(name="SayHello", input_type=".dubbo.demo.HelloRequest",
                       output_type=".dubbo.demo.HelloReply")
    service.method.add(name="SayHelloStream", input_type=".dubbo.demo.HelloRequest",
                       output_type=".dubbo.demo.HelloReply", server_streaming=True)
    return proto


_classes: dict[str, Any] = {}


def file_descriptor() -> bytes:
    """The demo's serialized FileDescriptorProto."""
    return bytes(_file_proto().SerializeToString())


def _messages() -> tuple[Any, Any]:
    if not _classes:
        from google.protobuf import descriptor_pool

        pool = descriptor_pool.DescriptorPool()  # of its own: never clashes with user files
        pool.Add(_file_proto())
        for name in ("HelloRequest", "HelloReply"):
            _classes[name] = message_class(pool.FindMessageTypeByName(f"dubbo.demo.{name}"))
    return _classes["HelloRequest"], _classes["HelloReply"]


def service_handler() -> RpcServiceHandler:
    """The demo Greeter, ready for ``ServiceConfig``."""
    request_cls, reply_cls = _messages()

    def say_hello(request: Any) -> Any:
        if not request.name:
            raise RpcError(StatusCode.INVALID_ARGUMENT, "name is empty")
        return reply_cls(message=f"hello, {request.name}")

    def say_hello_stream(request: Any) -> Iterator[Any]:
        for number in range(1, STREAM_REPLIES + 1):
            yield reply_cls(message=f"hello #{number}, {request.name}")

    def serialize(message: Any) -> bytes:
        return bytes(message.SerializeToString())

    return RpcServiceHandler(SERVICE_NAME, [
        RpcMethodHandler.unary(say_hello, "SayHello", request_cls.FromString, serialize),
        RpcMethodHandler.server_stream(say_hello_stream, "SayHelloStream",
                                       request_cls.FromString, serialize),
    ], file_descriptor=file_descriptor())
