"""grpcio's generated code runs unchanged with dubbo (issue 10, "grpcio code runs
unchanged"): the servicer grpcio-tools generates is served by ``dubbo.Server`` through
``add_XServicer_to_server``, and the generated stub calls over ``dubbo.Channel``.

Most tests run over all four pairs of {grpcio, dubbo} channel x {grpcio, dubbo} server
with the same assertions, so grpcio <-> grpcio shows the assertions are grpcio's own
behaviour, and the three pairs with a dubbo end show we match it.
"""

from __future__ import annotations

import pickle
import socket
import sys
import threading
import time
from concurrent import futures

import grpc
import pytest
import test_tls
from grpc_tools import protoc

import dubbo
from dubbo import RpcError, StatusCode
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.grpc_compat.channel import parse_target
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

PROTO = """
syntax = "proto3";
package compat.test;

message EchoRequest {
  string text = 1;
  int32 count = 2;
  string action = 3;
}
message EchoReply {
  string text = 1;
  int32 index = 2;
}
service Echo {
  rpc Unary (EchoRequest) returns (EchoReply);
  rpc ServerStream (EchoRequest) returns (stream EchoReply);
  rpc ClientStream (stream EchoRequest) returns (EchoReply);
  rpc BidiStream (stream EchoRequest) returns (stream EchoReply);
  rpc NotImplemented (EchoRequest) returns (EchoReply);
}
"""

pki = test_tls.pki  # the throwaway CA and certificates of the TLS tests, for a TLS channel

SLOW = 10.0  # seconds a "sleep" handler would run if nothing cancelled it


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """grpcio-tools' output for PROTO, generated now: (compat_echo_pb2, ..._pb2_grpc)."""
    out = tmp_path_factory.mktemp("gen")
    (out / "compat_echo.proto").write_text(PROTO)
    assert protoc.main(["protoc", f"-I{out}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(out / "compat_echo.proto")]) == 0
    sys.path.insert(0, str(out))
    try:
        import compat_echo_pb2
        import compat_echo_pb2_grpc
    finally:
        sys.path.remove(str(out))
    # What makes this a test of grpcio's own output: the generated code, unchanged.
    text = (out / "compat_echo_pb2_grpc.py").read_text()
    assert "server.add_generic_rpc_handlers((generic_handler,))" in text
    assert "_registered_method=True" in text
    return compat_echo_pb2, compat_echo_pb2_grpc


class Seen:
    """What the servicer observed, for the test to assert on."""

    def __init__(self) -> None:
        self.ended = threading.Event()  # an add_callback function ran
        self.inactive = threading.Event()  # the handler saw is_active() turn False
        self.stopped = threading.Event()  # a ServerStream handler ended (its finally ran)
        self.metadata: dict[str, str | bytes] = {}
        self.time_remaining: float | None = None
        self.peer = ""


def make_servicer(gen, seen: Seen):
    pb2, pb2_grpc = gen

    def wait_while_active(context) -> None:
        deadline = time.monotonic() + SLOW
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not context.is_active():
            seen.inactive.set()

    class Echo(pb2_grpc.EchoServicer):  # NotImplemented left to the generated base
        def Unary(self, request, context):
            context.add_callback(seen.ended.set)
            seen.metadata = dict(context.invocation_metadata())
            seen.time_remaining = context.time_remaining()
            seen.peer = context.peer()
            action = request.action
            if action == "abort":
                context.set_trailing_metadata((("why", "policy"),))
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "no entry")
            if action == "set_code":
                context.set_code(grpc.StatusCode.NOT_FOUND)
                context.set_details("nothing here")
                return None
            if action == "raise":
                raise ValueError("boom")
            if action == "sleep":
                wait_while_active(context)
                return pb2.EchoReply(text="late")
            context.send_initial_metadata((("initial-key", "iv"),))
            context.set_trailing_metadata((("trailing-key", "tv"),))
            return pb2.EchoReply(text=request.text)

        def ServerStream(self, request, context):
            context.add_callback(seen.ended.set)
            count = request.count if request.action != "endless" else 10**6
            try:
                for i in range(count):
                    if request.action == "abort" and i == 2:
                        context.abort(grpc.StatusCode.OUT_OF_RANGE, "only two")
                    if request.action == "endless":
                        if not context.is_active():
                            seen.inactive.set()
                            return
                        time.sleep(0.01)
                    yield pb2.EchoReply(text=request.text, index=i)
            finally:
                seen.stopped.set()

        def ClientStream(self, request_iterator, context):
            return pb2.EchoReply(text=",".join(r.text for r in request_iterator))

        def BidiStream(self, request_iterator, context):
            for i, request in enumerate(request_iterator):
                yield pb2.EchoReply(text=request.text.upper(), index=i)

    return Echo()


@pytest.fixture(params=["dubbo-server", "grpcio-server"])
def server(request, gen):
    """A server running the generated servicer: (kind, "127.0.0.1:port", Seen)."""
    _, pb2_grpc = gen
    seen = Seen()
    servicer = make_servicer(gen, seen)
    if request.param == "dubbo-server":
        srv = dubbo.Server(ServiceConfig(port=0))
        pb2_grpc.add_EchoServicer_to_server(servicer, srv)
        srv.start()
        try:
            yield request.param, f"127.0.0.1:{srv.port}", seen
        finally:
            srv.stop(grace=1.0)
    else:
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb2_grpc.add_EchoServicer_to_server(servicer, srv)
        port = srv.add_insecure_port("127.0.0.1:0")
        srv.start()
        try:
            yield request.param, f"127.0.0.1:{port}", seen
        finally:
            srv.stop(None).wait(5)


CHANNELS = {"dubbo-channel": dubbo.Channel, "grpcio-channel": grpc.insecure_channel}


@pytest.fixture(params=sorted(CHANNELS))
def stub(request, server, gen):
    """The generated stub over a dubbo or a grpcio channel to ``server``."""
    _, pb2_grpc = gen
    with CHANNELS[request.param](server[1]) as channel:
        yield pb2_grpc.EchoStub(channel)


def req(gen, text="", **kwargs):
    return gen[0].EchoRequest(text=text, **kwargs)


# -- the four kinds, metadata, with_call ---------------------------------------------


def test_unary_with_metadata_and_with_call(gen, server, stub):
    reply = stub.Unary(req(gen, "hi"), metadata=(("x-token", "t1"), ("x-raw-bin", b"\x00\xff")),
                       timeout=30)
    assert reply.text == "hi"
    seen = server[2]
    assert seen.metadata["x-token"] == "t1"
    assert seen.metadata["x-raw-bin"] == b"\x00\xff"
    # (grpcio rounds the propagated deadline: a hair over 30 s is what it reports at times)
    assert seen.time_remaining is not None and 0 < seen.time_remaining <= 30.5
    assert seen.peer.startswith("ipv4:127.0.0.1:")

    reply, call = stub.Unary.with_call(req(gen, "again"))
    assert reply.text == "again"
    assert isinstance(call, grpc.Call)
    assert call.code() == grpc.StatusCode.OK
    assert ("initial-key", "iv") in tuple(call.initial_metadata())
    assert ("trailing-key", "tv") in tuple(call.trailing_metadata())


def test_streaming_kinds(gen, server, stub):
    replies = stub.ServerStream(req(gen, "s", count=3))
    assert isinstance(replies, grpc.Call)
    assert [(r.text, r.index) for r in replies] == [("s", 0), ("s", 1), ("s", 2)]
    assert replies.code() == grpc.StatusCode.OK

    texts = (req(gen, t) for t in ("a", "b", "c"))
    assert stub.ClientStream(texts).text == "a,b,c"
    reply, call = stub.ClientStream.with_call(iter([req(gen, "x")]))
    assert reply.text == "x" and call.code() == grpc.StatusCode.OK

    replies = stub.BidiStream(iter([req(gen, "a"), req(gen, "b")]))
    assert [(r.text, r.index) for r in replies] == [("A", 0), ("B", 1)]
    assert replies.code() == grpc.StatusCode.OK


def test_bidi_replies_while_requests_are_sent(gen, server, stub):
    """A reply comes back before the next request is made: requests are not held."""
    sent = []
    reply_seen = threading.Event()

    def requests():
        for text in ("ping", "pong"):
            sent.append(text)
            yield req(gen, text)
            assert reply_seen.wait(10), "no reply to the first request before the second"

    replies = stub.BidiStream(requests(), timeout=30)
    first = next(replies)
    reply_seen.set()
    assert first.text == "PING"
    assert [r.text for r in replies] == ["PONG"]


# -- futures -------------------------------------------------------------------------


def test_future(gen, server, stub):
    future = stub.Unary.future(req(gen, "f"), timeout=30)
    done = threading.Event()
    future.add_done_callback(lambda f: done.set())
    assert future.result(timeout=10).text == "f"
    assert done.wait(5)
    assert future.done() and not future.cancelled() and not future.running()
    assert future.exception() is None
    assert future.code() == grpc.StatusCode.OK

    failing = stub.Unary.future(req(gen, action="abort"))
    error = failing.exception(timeout=10)
    assert isinstance(error, grpc.RpcError)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "no entry"
    with pytest.raises(grpc.RpcError) as info:
        failing.result()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

    streamed = stub.ClientStream.future(iter([req(gen, "1"), req(gen, "2")]))
    assert streamed.result(timeout=10).text == "1,2"


def test_future_cancel_reaches_the_servicer(gen, server, stub):
    future = stub.Unary.future(req(gen, action="sleep"), timeout=30)
    with pytest.raises(grpc.FutureTimeoutError):
        future.result(timeout=0.2)
    assert future.cancel()
    assert future.cancelled() and future.done()
    with pytest.raises(grpc.FutureCancelledError):
        future.result(timeout=5)
    assert not future.cancel()
    assert server[2].inactive.wait(5), "the servicer did not see the cancellation"


# -- deadlines and errors ------------------------------------------------------------


def test_timeout_is_deadline_exceeded(gen, server, stub):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.Unary(req(gen, action="sleep"), timeout=0.3)
    assert time.monotonic() - started < SLOW / 2
    error = info.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert server[2].inactive.wait(5), "the servicer did not see the deadline pass"

    replies = stub.ServerStream(req(gen, action="endless"), timeout=0.3)
    with pytest.raises(grpc.RpcError) as info:
        for _ in replies:
            pass
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert replies.code() == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize(("action", "code", "details"), [
    ("abort", grpc.StatusCode.PERMISSION_DENIED, "no entry"),
    ("set_code", grpc.StatusCode.NOT_FOUND, "nothing here"),
    ("raise", grpc.StatusCode.UNKNOWN, "Exception calling application: boom"),
])
def test_servicer_status(gen, server, stub, action, code, details):
    with pytest.raises(grpc.RpcError) as info:
        stub.Unary(req(gen, action=action))
    assert info.value.code() == code
    assert info.value.details() == details
    if action == "abort":  # trailing metadata set before abort() goes with the status
        assert ("why", "policy") in tuple(info.value.trailing_metadata())


def test_unimplemented_method_of_the_generated_base(gen, server, stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.NotImplemented(req(gen))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert info.value.details() == "Method not implemented!"


def test_error_in_the_middle_of_a_stream(gen, server, stub):
    replies = stub.ServerStream(req(gen, "x", count=5, action="abort"))
    got = []
    with pytest.raises(grpc.RpcError) as info:
        for reply in replies:
            got.append(reply.index)
    assert got == [0, 1]
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert info.value.details() == "only two"
    assert replies.code() == grpc.StatusCode.OUT_OF_RANGE
    assert replies.details() == "only two"


def test_cancel_a_streaming_call(gen, server, stub):
    replies = stub.ServerStream(req(gen, "e", action="endless"), timeout=30)
    ended = threading.Event()
    assert replies.add_callback(ended.set)
    assert next(replies).index == 0
    assert next(replies).index == 1
    assert replies.is_active()
    assert replies.cancel()
    with pytest.raises(grpc.RpcError) as info:
        for _ in range(1000):  # replies already on their way may still arrive
            next(replies)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert replies.code() == grpc.StatusCode.CANCELLED
    assert not replies.is_active()
    assert ended.wait(5)
    seen = server[2]
    # The handler is not iterated any further (dubbo closes its generator; grpcio
    # drops it or lets it see is_active() turn False), and add_callback runs.
    assert seen.stopped.wait(5), "the servicer's generator was not stopped"
    assert seen.ended.wait(5), "the servicer's add_callback did not run"


# -- dubbo.Channel on its own ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_channel_errors_are_grpc_errors_and_unavailable(gen):
    port = _free_port()  # nothing listens there
    with dubbo.Channel(f"127.0.0.1:{port}") as channel:
        stub = gen[1].EchoStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(req(gen), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert isinstance(info.value, grpc.Call)
        assert isinstance(info.value.error, RpcError)  # dubbo's own, for the curious
        assert "UNAVAILABLE" in str(info.value)
        replies = stub.ServerStream(req(gen))  # as grpcio: the failure shows when read
        with pytest.raises(grpc.RpcError) as info:
            next(replies)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert replies.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(ValueError, match="closed channel"):  # grpcio raises the same
        stub.Unary(req(gen))


def test_channel_wait_for_ready_and_ready_future(gen):
    port = _free_port()
    pb2, pb2_grpc = gen
    srv = dubbo.Server(ServiceConfig(port=port))
    pb2_grpc.add_EchoServicer_to_server(make_servicer(gen, Seen()), srv)
    result: list = []
    with dubbo.Channel(f"127.0.0.1:{port}") as channel:
        stub = pb2_grpc.EchoStub(channel)
        ready = grpc.channel_ready_future(channel)
        waiter = threading.Thread(target=lambda: result.append(
            stub.Unary(req(gen, "waited"), timeout=10, wait_for_ready=True)))
        waiter.start()
        time.sleep(0.3)  # the call waits for a server that is not there yet
        assert waiter.is_alive() and not ready.done()
        srv.start()
        try:
            ready.result(timeout=10)
            waiter.join(10)
            assert [r.text for r in result] == ["waited"]
            # wait_for_ready with nothing to wait for, and a deadline that passes waiting
            assert stub.Unary(req(gen, "now"), wait_for_ready=True, timeout=5).text == "now"
        finally:
            srv.stop(grace=1.0)
    with dubbo.Channel(f"127.0.0.1:{_free_port()}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            gen[1].EchoStub(channel).Unary(req(gen), wait_for_ready=True, timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        unready = grpc.channel_ready_future(channel)
        with pytest.raises(grpc.FutureTimeoutError):
            unready.result(timeout=0.2)
        unready.cancel()


def test_channel_options_and_compression(gen, serve_echo):
    pb2, pb2_grpc = gen
    options = [("grpc.max_receive_message_length", 64), ("grpc.primary_user_agent", "x")]
    with dubbo.Channel(serve_echo, options=options) as channel:
        stub = pb2_grpc.EchoStub(channel)
        assert stub.Unary(req(gen, "small")).text == "small"
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(req(gen, "x" * 200))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with dubbo.Channel(serve_echo, compression=grpc.Compression.Gzip) as channel:
        stub = pb2_grpc.EchoStub(channel)
        assert stub.Unary(req(gen, "z" * 1000)).text == "z" * 1000
        assert stub.Unary(req(gen, "d"), compression=grpc.Compression.Deflate).text == "d"


@pytest.fixture
def serve_echo(gen):
    """The generated servicer on a dubbo server: its target."""
    srv = dubbo.Server(ServiceConfig(port=0))
    gen[1].add_EchoServicer_to_server(make_servicer(gen, Seen()), srv)
    with srv:
        yield f"127.0.0.1:{srv.port}"


def test_channel_calls_any_service_and_stream_callbacks(gen, serve_echo):
    """Methods are paths, as on a grpc channel: no per-service client needed; the raw
    bytes API (no serializers) works too."""
    pb2 = gen[0]
    with dubbo.Channel(serve_echo) as channel:
        raw = channel.unary_unary("/compat.test.Echo/Unary")
        reply = pb2.EchoReply.FromString(raw(pb2.EchoRequest(text="raw").SerializeToString()))
        assert reply.text == "raw"
        missing = channel.unary_unary("/compat.test.Nope/Unary")
        with pytest.raises(grpc.RpcError) as info:
            missing(b"")
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        replies = channel.unary_stream("/compat.test.Echo/ServerStream",
                                       pb2.EchoRequest.SerializeToString,
                                       pb2.EchoReply.FromString)(pb2.EchoRequest(count=2))
        ended = threading.Event()
        assert replies.add_callback(ended.set)
        assert len(list(replies)) == 2
        assert ended.is_set()
        assert not replies.add_callback(ended.set)  # over: not registered, as grpcio
        with pytest.raises(NotImplementedError):
            raw(b"", credentials=object())


@pytest.mark.parametrize(("target", "expected"), [
    ("127.0.0.1:50051", ("127.0.0.1", 50051)),
    ("localhost:8080", ("localhost", 8080)),
    ("localhost", ("localhost", 443)),
    ("[::1]:50051", ("::1", 50051)),
    ("::1", ("::1", 443)),
    ("dns:///example.com:9000", ("example.com", 9000)),
    ("dns://8.8.8.8/example.com:9000", ("example.com", 9000)),
    ("dns:example.com:9000", ("example.com", 9000)),
    ("ipv4:10.0.0.1:81,10.0.0.2:81", ("10.0.0.1", 81)),
    ("ipv6:[::1]:82", ("::1", 82)),
])
def test_parse_target(target, expected):
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["unix:/tmp/sock", ":50051", "host:port"])
def test_parse_target_refuses(target):
    with pytest.raises(ValueError):
        parse_target(target)


# -- dubbo.Server with grpcio's handler API --------------------------------------------


class PerCallHandler(grpc.GenericRpcHandler):
    """A hand-written generic handler, asked per call (as grpcio does)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict]] = []

    def service(self, handler_call_details):
        self.asked.append((handler_call_details.method,
                           dict(handler_call_details.invocation_metadata)))
        if handler_call_details.method == "/dyn.Any/Echo":
            return grpc.unary_unary_rpc_method_handler(lambda request, context: request[::-1])
        if handler_call_details.method == "/dyn.Any/Count":
            return grpc.unary_stream_rpc_method_handler(
                lambda request, context: (bytes([i]) for i in range(request[0])))
        return None


def test_generic_handler_asked_per_call():
    handler = PerCallHandler()
    srv = dubbo.Server(ServiceConfig(port=0))
    srv.add_generic_rpc_handlers((handler,))
    with srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        echo = channel.unary_unary("/dyn.Any/Echo")
        assert echo(b"abc", metadata=(("k", "v"),)) == b"cba"
        assert list(channel.unary_stream("/dyn.Any/Count")(b"\x03")) == [b"\0", b"\1", b"\2"]
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/dyn.Any/Missing")(b"")
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert handler.asked[0][0] == "/dyn.Any/Echo" and handler.asked[0][1]["k"] == "v"
    assert [path for path, _ in handler.asked] == ["/dyn.Any/Echo", "/dyn.Any/Count",
                                                  "/dyn.Any/Missing"]


def test_registered_method_handlers_next_to_our_own_service(gen):
    pb2 = gen[0]
    ours = RpcServiceHandler("ours.Svc", [RpcMethodHandler.unary(lambda r: b"ours:" + r,
                                                                 method_name="Call")])
    srv = dubbo.Server(ServiceConfig(ours, port=0))
    srv.add_registered_method_handlers("compat.test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(
            lambda request, context: pb2.EchoReply(text=request.text + "!"),
            request_deserializer=pb2.EchoRequest.FromString,
            response_serializer=pb2.EchoReply.SerializeToString),
    })
    assert sorted(srv.services) == ["compat.test.Echo", "ours.Svc"]
    with srv, dubbo.Channel(f"127.0.0.1:{srv.port}") as channel:
        assert gen[1].EchoStub(channel).Unary(req(gen, "reg")).text == "reg!"
        assert channel.unary_unary("/ours.Svc/Call")(b"x") == b"ours:x"


def test_bad_generic_handler_is_refused():
    srv = dubbo.Server(ServiceConfig(port=0))
    with pytest.raises(TypeError, match="GenericRpcHandler"):
        srv.add_generic_rpc_handlers((object(),))


# -- dubbo's own RpcError and context speak grpcio's spelling too -----------------------


def test_rpc_error_code_and_details_are_attributes_and_callables():
    error = RpcError(StatusCode.NOT_FOUND, "no such user")
    assert error.code is StatusCode.NOT_FOUND
    assert error.code == StatusCode.NOT_FOUND
    assert error.code() is StatusCode.NOT_FOUND
    assert error.details == "no such user"
    assert error.details() == "no such user"
    assert isinstance(error.details, str) and type(error.details()) is str
    assert RpcError(code=StatusCode.INTERNAL, details="k").code() is StatusCode.INTERNAL
    assert RpcError().code is StatusCode.UNKNOWN and RpcError().details() == ""
    error.details = "changed"  # still callable after assignment
    assert error.details() == "changed"
    error.code = 3
    assert error.code() is StatusCode.INVALID_ARGUMENT
    copy = pickle.loads(pickle.dumps(RpcError(StatusCode.ABORTED, "p")))
    assert copy.code() is StatusCode.ABORTED and copy.details() == "p"
    assert str(RpcError(StatusCode.ABORTED, "p")) == "<RpcError ABORTED: p>"


def test_client_errors_and_context_code_on_our_own_api():
    """dubbo.Client errors answer e.code()/e.details(); a handler's context.code()
    and details() read back what set_code/set_details (with grpc's enum) set."""
    observed = []

    def handler(request, context):
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        context.set_details("not yet")
        observed.append((context.code(), context.details()))
        return b""

    service = RpcServiceHandler("own.Svc", [RpcMethodHandler.unary(handler, "Call")])
    with dubbo.Server(ServiceConfig(service, port=0)) as srv, \
            dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{srv.port}/own.Svc")) as c:
        with pytest.raises(RpcError) as info:
            c.unary("Call")(b"")
    assert info.value.code() is StatusCode.FAILED_PRECONDITION
    assert info.value.code is StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "not yet" and info.value.details == "not yet"
    assert observed == [(StatusCode.FAILED_PRECONDITION, "not yet")]


def test_rich_error_details_through_the_channel(gen):
    """grpcio-status' helpers work on both ends: abort_with_status in the servicer,
    rpc_status.from_call on the error a dubbo.Channel raises."""
    from google.rpc import code_pb2, error_details_pb2, status_pb2
    from grpc_status import rpc_status

    pb2, pb2_grpc = gen
    detail = error_details_pb2.ErrorInfo(reason="QUOTA", domain="example.com")
    packed = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow down")
    packed.details.add().Pack(detail)

    class Rich(pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            context.abort_with_status(rpc_status.to_status(packed))

    srv = dubbo.Server(ServiceConfig(port=0))
    pb2_grpc.add_EchoServicer_to_server(Rich(), srv)
    with srv, dubbo.Channel(f"127.0.0.1:{srv.port}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb2_grpc.EchoStub(channel).Unary(req(gen))
    status = rpc_status.from_call(info.value)
    assert status is not None and status.message == "slow down"
    got = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(got) and got.reason == "QUOTA"


def test_channel_over_tls(pki):
    """ssl_context makes a Channel what grpc.secure_channel is."""
    from dubbo.transport.tls import client_context, server_context

    srv = dubbo.Server(ServiceConfig(test_tls._echo_service(), port=0),
                       ssl_context=server_context(pki["server.pem"], pki["server.key"]))
    with srv, dubbo.Channel(f"127.0.0.1:{srv.port}",
                            ssl_context=client_context(pki["ca.pem"])) as channel:
        assert channel.unary_unary(f"/{test_tls.SERVICE}/echo")(b"secret", timeout=10) == b"secret"
