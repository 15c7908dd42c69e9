"""Server reflection (grpc.reflection.v1 and v1alpha) on dubbo.Server(reflection=True),
checked with grpcio-reflection's client over a real grpc channel, a grpc channel
speaking v1 with our message classes, and our own dubbo.Client."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2

try:
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
except Exception as exc:  # its gencode needs a newer protobuf than the oldest we support
    pytest.skip(f"grpcio-reflection does not load here: {exc!r}", allow_module_level=True)

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.services._protobuf import message_class

GREETER = "org.apache.dubbo.samples.proto.Greeter"
BUILTIN = ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
           "grpc.reflection.v1alpha.ServerReflection"]


def _bytes_handler(name: str, methods: list[str], file_descriptor: object = None
                   ) -> RpcServiceHandler:
    def echo(request: bytes) -> bytes:
        return request

    return RpcServiceHandler(name, [RpcMethodHandler.unary(echo, m) for m in methods],
                             file_descriptor=file_descriptor)


def _clock_file() -> bytes:
    """A hand-built file importing a well-known type, given as serialized bytes."""
    f = descriptor_pb2.FileDescriptorProto(
        name="test/clock.proto", package="test.clock", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"])
    now = f.message_type.add(name="Now")
    now.field.add(name="at", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                  type_name=".google.protobuf.Timestamp",
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    service = f.service.add(name="Clock")
    service.method.add(name="Get", input_type=".test.clock.Now", output_type=".test.clock.Now")
    return f.SerializeToString()


def _extensions_file() -> descriptor_pb2.FileDescriptorProto:
    """A proto2 file with an extendable message and two extensions of it."""
    f = descriptor_pb2.FileDescriptorProto(name="test/ext.proto", package="test.ext",
                                           syntax="proto2")
    base = f.message_type.add(name="Base")
    base.extension_range.add(start=100, end=200)
    for name, number in (("colour", 100), ("size", 150)):
        f.extension.add(name=name, number=number, extendee=".test.ext.Base",
                        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    service = f.service.add(name="Ext")
    service.method.add(name="Get", input_type=".test.ext.Base", output_type=".test.ext.Base")
    return f


def _assert_extensions_file(data: bytes) -> None:
    got = descriptor_pb2.FileDescriptorProto.FromString(data)
    if not got.syntax:  # some runtimes leave out proto2, the default
        got.syntax = "proto2"
    assert got == _extensions_file()


@pytest.fixture
def server() -> Iterator[dubbo.Server]:
    import greeter_pb2  # noqa: F401  (its file goes into the default pool)

    # the greeter names no descriptor: found in protobuf's default pool
    server = dubbo.Server(ServiceConfig(_bytes_handler(GREETER, ["sayHello"]), port=0),
                          reflection=True)
    server.add_service(_bytes_handler("test.clock.Clock", ["Get"], _clock_file()))
    ext = descriptor_pool.DescriptorPool()
    server.add_service(_bytes_handler("test.ext.Ext", ["Get"],
                                      ext.Add(_extensions_file()) or
                                      ext.FindFileByName("test/ext.proto")))
    server.start()
    yield server
    server.stop(grace=1)


@pytest.fixture
def channel(server: dubbo.Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


def _ask(channel: grpc.Channel, *requests: object, package: str = "grpc.reflection.v1alpha"
         ) -> list:
    """Send requests on one ServerReflectionInfo stream; the responses, in order."""
    if package == "grpc.reflection.v1alpha":
        response_class = reflection_pb2.ServerReflectionResponse
    else:
        response_class = message_class(f"{package}.ServerReflectionResponse")
    call = channel.stream_stream(f"/{package}.ServerReflection/ServerReflectionInfo",
                                 request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=response_class.FromString)
    return list(call(iter(requests), timeout=10))


# -- grpcio-reflection's client --------------------------------------------------------


def test_grpcio_client_lists_the_services_with_health_and_reflection(channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert database.get_services() == sorted(
        [GREETER, "test.clock.Clock", "test.ext.Ext", *BUILTIN])


def test_grpcio_client_resolves_methods_and_message_types(channel) -> None:
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    greeter = pool.FindServiceByName(GREETER)
    methods = {m.name: m for m in greeter.methods}
    assert set(methods) == {"sayHello", "clientStream", "serverStream", "biStream"}
    assert methods["sayHello"].input_type.full_name == f"{GREETER.rsplit('.', 1)[0]}" \
        ".GreeterRequest"
    assert methods["biStream"].client_streaming and methods["biStream"].server_streaming
    reply = pool.FindMessageTypeByName("org.apache.dubbo.samples.proto.GreeterReply")
    assert [f.name for f in reply.fields] == ["message"]
    # the built-in services describe themselves too
    watch = pool.FindMethodByName("grpc.health.v1.Health.Watch")
    assert watch.output_type.full_name == "grpc.health.v1.HealthCheckResponse"
    assert watch.server_streaming
    info = pool.FindServiceByName("grpc.reflection.v1.ServerReflection").methods[0]
    assert info.name == "ServerReflectionInfo"


def test_a_serialized_file_comes_with_the_files_it_imports(channel) -> None:
    assert timestamp_pb2  # the import put google/protobuf/timestamp.proto in the default pool
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    now = pool.FindMessageTypeByName("test.clock.Now")
    assert now.fields_by_name["at"].message_type.full_name == "google.protobuf.Timestamp"
    [response] = _ask(channel, reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="test.clock.Clock.Get"))
    files = [descriptor_pb2.FileDescriptorProto.FromString(data).name
             for data in response.file_descriptor_response.file_descriptor_proto]
    assert files == ["test/clock.proto", "google/protobuf/timestamp.proto"]


def test_grpcio_client_finds_extensions(channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert sorted(database.FindAllExtensionNumbers("test.ext.Base")) == [100, 150]
    pool = descriptor_pool.DescriptorPool(database)
    assert pool.FindExtensionByName("test.ext.size").number == 150
    # (the client's FindFileContainingExtension asks, then looks in a python index that
    # does not hold extensions on every protobuf: ask by hand)
    [answer] = _ask(channel, reflection_pb2.ServerReflectionRequest(
        file_containing_extension=reflection_pb2.ExtensionRequest(
            containing_type="test.ext.Base", extension_number=150)))
    [data] = answer.file_descriptor_response.file_descriptor_proto
    _assert_extensions_file(data)


# -- the protocol, request by request ------------------------------------------------


def test_each_request_gets_its_answer_in_order_on_one_stream(channel) -> None:
    R = reflection_pb2.ServerReflectionRequest
    asked = [
        R(host="h", list_services=""),
        R(file_by_filename="grpc/health/v1/health.proto"),
        R(file_by_filename="no/such.proto"),
        R(file_containing_symbol="no.Such"),
        R(file_containing_symbol="grpc.health.v1.HealthCheckResponse.ServingStatus"),
        R(file_containing_extension=reflection_pb2.ExtensionRequest(
            containing_type="test.ext.Base", extension_number=101)),
        R(all_extension_numbers_of_type="no.Such"),
        R(),
    ]
    answers = _ask(channel, *asked)
    assert [a.original_request for a in answers] == asked
    assert answers[0].valid_host == "h"
    kinds = [a.WhichOneof("message_response") for a in answers]
    assert kinds == ["list_services_response", "file_descriptor_response",
                     "error_response", "error_response", "file_descriptor_response",
                     "error_response", "error_response", "error_response"]
    codes = [a.error_response.error_code for a in answers if a.HasField("error_response")]
    assert codes == [grpc.StatusCode.NOT_FOUND.value[0]] * 4 + \
        [grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    assert "no/such.proto" in answers[2].error_response.error_message
    health = descriptor_pb2.FileDescriptorProto.FromString(
        answers[4].file_descriptor_response.file_descriptor_proto[0])
    assert health.package == "grpc.health.v1"


def test_v1_answers_a_grpc_client_as_v1alpha_does(channel) -> None:
    request = message_class("grpc.reflection.v1.ServerReflectionRequest")
    [listed, file] = _ask(channel, request(list_services=""),
                          request(file_containing_symbol=GREETER),
                          package="grpc.reflection.v1")
    assert [s.name for s in listed.list_services_response.service] == sorted(
        [GREETER, "test.clock.Clock", "test.ext.Ext", *BUILTIN])
    [data] = file.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(data).name == "greeter.proto"


def test_our_client_calls_reflection(server) -> None:
    request = message_class("grpc.reflection.v1.ServerReflectionRequest")
    response = message_class("grpc.reflection.v1.ServerReflectionResponse")
    with dubbo.Client(ReferenceConfig.from_url(
            f"tri://127.0.0.1:{server.port}/grpc.reflection.v1.ServerReflection")) as client:
        info = client.bidi_stream("ServerReflectionInfo", lambda m: m.SerializeToString(),
                                  response.FromString)
        [answer] = list(info(iter([request(file_containing_symbol="test.ext.Ext.Get")]),
                             timeout=10))
    [data] = answer.file_descriptor_response.file_descriptor_proto
    _assert_extensions_file(data)


def test_a_service_without_a_descriptor_anywhere_is_still_listed() -> None:
    server = dubbo.Server(ServiceConfig(_bytes_handler("no.proto.Anywhere", ["f"]), port=0),
                          reflection=True)
    with server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        [listed, missing] = _ask(channel,
                                 reflection_pb2.ServerReflectionRequest(list_services=""),
                                 reflection_pb2.ServerReflectionRequest(
                                     file_containing_symbol="no.proto.Anywhere"))
        assert [s.name for s in listed.list_services_response.service] == sorted(
            ["no.proto.Anywhere", *BUILTIN])
        assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_reflection_is_off_unless_asked_for() -> None:
    server = dubbo.Server(ServiceConfig(_bytes_handler("a.B", ["f"]), port=0))
    assert server.reflection is None
    with server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.RpcError) as failure:
            _ask(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
