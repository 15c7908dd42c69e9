"""OpenTelemetry interceptor: server and client spans with the rpc.* attributes, and
W3C traceparent carried both ways (our client and server, grpcio's on either end)."""

from __future__ import annotations

import sys
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode as SpanStatus

import dubbo
from dubbo import RpcError, StatusCode
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.interceptors.tracing import OpenTelemetryInterceptor
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "test.tracing.Greeter"
current_in_handler: dict[str, trace.SpanContext] = {}


def say(request, context):
    current_in_handler["say"] = trace.get_current_span().get_span_context()
    return b"hi " + request


def collect(requests):
    return b",".join(requests)


def fan(request):
    current_in_handler["fan"] = trace.get_current_span().get_span_context()
    yield from request.split(b",")


def chat(requests):
    yield from requests


def missing(request, context):
    context.abort(StatusCode.NOT_FOUND, "nobody")


def crash(request):
    raise ValueError("a bug")


HANDLERS = [RpcMethodHandler.unary(say), RpcMethodHandler.client_stream(collect),
            RpcMethodHandler.server_stream(fan), RpcMethodHandler.bi_stream(chat),
            RpcMethodHandler.unary(missing), RpcMethodHandler.unary(crash)]


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def rig(provider):
    current_in_handler.clear()
    service = RpcServiceHandler(SERVICE, HANDLERS)
    server = dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0),
                          interceptors=[OpenTelemetryInterceptor(provider)]).start()
    client = dubbo.Client(
        ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}"),
        interceptors=[OpenTelemetryInterceptor(provider)])
    yield server, client
    client.close()
    server.stop(grace=1)


def spans(exporter, count: int, timeout: float = 5.0) -> list:
    """The finished spans once there are ``count`` (a server span ends once its status
    went out, which may be after the client returned)."""
    deadline = time.monotonic() + timeout
    while len(exporter.get_finished_spans()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    finished = list(exporter.get_finished_spans())
    assert len(finished) == count, [s.name for s in finished]
    return finished


def pair(finished: list, method: str):
    named = [s for s in finished if s.name == f"{SERVICE}/{method}"]
    client = next(s for s in named if s.kind is SpanKind.CLIENT)
    server = next(s for s in named if s.kind is SpanKind.SERVER)
    return client, server


def test_spans_on_both_sides_for_every_kind(rig, exporter):
    _, client = rig
    assert client.unary("say")(b"a", timeout=5) == b"hi a"
    assert client.client_stream("collect")(iter([b"1", b"2"]), timeout=5) == b"1,2"
    assert list(client.server_stream("fan")(b"x,y", timeout=5)) == [b"x", b"y"]
    assert list(client.bidi_stream("chat")(iter([b"p"]), timeout=5)) == [b"p"]
    finished = spans(exporter, 8)
    for method in ("say", "collect", "fan", "chat"):
        client_span, server_span = pair(finished, method)
        for span in (client_span, server_span):
            assert dict(span.attributes) == {
                "rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method,
                "rpc.grpc.status_code": 0}
            assert span.status.status_code is SpanStatus.UNSET
        # one trace: the server span is the client span's child, across the wire
        assert server_span.context.trace_id == client_span.context.trace_id
        assert server_span.parent.span_id == client_span.context.span_id
        assert server_span.parent.is_remote
    # the server span is current in the handler, also in a reply generator
    for method in ("say", "fan"):
        _, server_span = pair(finished, method)
        assert current_in_handler[method] == server_span.context


def test_a_client_span_is_a_child_of_the_callers_span(rig, exporter, provider):
    _, client = rig
    with provider.get_tracer("test").start_as_current_span("request handling") as parent:
        client.unary("say")(b"a", timeout=5)
    finished = spans(exporter, 3)
    client_span, server_span = pair(finished, "say")
    assert client_span.parent.span_id == parent.get_span_context().span_id
    assert server_span.context.trace_id == parent.get_span_context().trace_id


def test_error_statuses(rig, exporter):
    _, client = rig
    with pytest.raises(RpcError):
        client.unary("missing")(b"", timeout=5)
    with pytest.raises(RpcError):
        client.unary("crash")(b"", timeout=5)
    finished = spans(exporter, 4)
    client_span, server_span = pair(finished, "missing")
    assert client_span.attributes["rpc.grpc.status_code"] == StatusCode.NOT_FOUND
    assert server_span.attributes["rpc.grpc.status_code"] == StatusCode.NOT_FOUND
    # NOT_FOUND is the caller's problem: an error for the client span only
    assert client_span.status.status_code is SpanStatus.ERROR
    assert client_span.status.description == "NOT_FOUND: nobody"
    assert server_span.status.status_code is SpanStatus.UNSET
    client_span, server_span = pair(finished, "crash")
    assert server_span.attributes["rpc.grpc.status_code"] == StatusCode.UNKNOWN
    assert server_span.status.status_code is SpanStatus.ERROR
    assert client_span.status.status_code is SpanStatus.ERROR
    assert [e.name for e in server_span.events] == ["exception"]
    assert server_span.events[0].attributes["exception.message"] == "a bug"


def test_our_client_sends_traceparent_to_a_grpcio_server(provider, exporter):
    received = []

    def echo(request, context):
        received.append(dict(context.invocation_metadata()))
        return request

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"say": grpc.unary_unary_rpc_method_handler(echo)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"),
                          interceptors=[OpenTelemetryInterceptor(provider)]) as client:
            assert client.unary("say")(b"x", timeout=5) == b"x"
    finally:
        server.stop(None)
    [span] = spans(exporter, 1)
    context = span.context
    assert received[0]["traceparent"] == \
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert context.trace_flags.sampled
    assert span.kind is SpanKind.CLIENT and span.attributes["rpc.grpc.status_code"] == 0


def test_a_grpcio_clients_traceparent_is_the_server_spans_parent(rig, exporter):
    server, _ = rig
    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        say_ = channel.unary_unary(f"/{SERVICE}/say", lambda b: b, lambda b: b)
        reply = say_(b"g", timeout=5, metadata=[
            ("traceparent", f"00-{trace_id:032x}-{span_id:016x}-01")])
    assert reply == b"hi g"
    [span] = spans(exporter, 1)
    assert span.kind is SpanKind.SERVER
    assert span.context.trace_id == trace_id
    assert span.parent.span_id == span_id and span.parent.is_remote


def test_without_opentelemetry_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'dubbo\[opentelemetry\]'"):
        OpenTelemetryInterceptor()
