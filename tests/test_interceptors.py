"""Interceptors (dubbo/interceptors): order, metadata, status and latency of every call
however it ends, ending a call from an interceptor (auth), logging; against our own
peer and against grpcio's client and server."""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent import futures

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

import dubbo
from dubbo import RpcError, StatusCode
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.interceptors import (
    BearerTokenClientInterceptor,
    BearerTokenServerInterceptor,
    CallResult,
    ClientInterceptor,
    LoggingInterceptor,
    ServerInterceptor,
)
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "test.interceptors.Echo"
WAIT = 5.0  # seconds a test waits for a server-side done callback


# -- a service with every kind and every way to end ------------------------------------


class Handlers:
    def __init__(self) -> None:
        self.ran: list[str] = []  # handlers that started
        self.seen_metadata: list[tuple[str, object]] = []

    def echo(self, request, context):
        self.ran.append("echo")
        self.seen_metadata = list(context.invocation_metadata())
        context.send_initial_metadata([("x-handler-initial", "h")])
        context.set_trailing_metadata([("x-handler-trailing", "h")])
        return request

    def plain(self, request):
        self.ran.append("plain")
        return request

    def join(self, requests):
        self.ran.append("join")
        return b",".join(requests)

    def split(self, request):
        self.ran.append("split")
        yield from request.split(b",")

    def chat(self, requests, context):
        self.ran.append("chat")
        for request in requests:
            yield request.upper()

    def crash(self, request):
        raise ValueError("a bug")

    def missing(self, request, context):
        context.set_trailing_metadata([("x-reason", "gone")])
        context.abort(StatusCode.NOT_FOUND, "no such thing")

    def locked(self, request, context):
        context.set_code(StatusCode.FAILED_PRECONDITION)
        context.set_details("locked")
        return b""

    def broken_stream(self, request):
        yield b"one"
        raise RpcError(StatusCode.DATA_LOSS, "lost it")

    def slow(self, request, context):
        for _ in range(250):  # until the deadline or the cancel, at most 5 s
            if not context.is_active():
                break
            time.sleep(0.02)
        return b"late"

    def ticks(self, request, context):
        for i in range(250):
            if not context.is_active():
                return
            yield b"tick %d" % i
            time.sleep(0.02)

    def method_handlers(self) -> list[RpcMethodHandler]:
        H = RpcMethodHandler
        return [H.unary(self.echo), H.unary(self.plain), H.client_stream(self.join),
                H.server_stream(self.split), H.bi_stream(self.chat), H.unary(self.crash),
                H.unary(self.missing), H.unary(self.locked),
                H.server_stream(self.broken_stream), H.unary(self.slow),
                H.server_stream(self.ticks)]


class Recorder(ServerInterceptor, ClientInterceptor):
    """Notes when the chain reaches it and how each call ended."""

    def __init__(self, name: str, events: list, add_metadata: bool = False) -> None:
        self.name = name
        self.events = events
        self.add_metadata = add_metadata
        self.results: dict[str, CallResult] = {}
        self.calls: dict[str, object] = {}
        self.done = threading.Condition()

    def _enter(self, call) -> None:
        self.events.append(("in", self.name, call.method_name))
        self.calls[call.method_name] = call

        def finished(result: CallResult) -> None:
            self.events.append(("done", self.name, call.method_name))
            with self.done:
                self.results[call.method_name] = result
                self.done.notify_all()

        call.add_done_callback(finished)

    def intercept_server(self, continuation, request, call):
        self._enter(call)
        if self.add_metadata:
            call.metadata.append((f"x-{self.name}", "request"))
            call.add_initial_metadata([(f"x-{self.name}-initial", "i")])
            call.add_trailing_metadata([(f"x-{self.name}-trailing", "t")])
        reply = continuation(request)
        self.events.append(("out", self.name, call.method_name))
        return reply

    def intercept_client(self, continuation, request, call):
        self._enter(call)
        if self.add_metadata:
            call.metadata.append((f"x-{self.name}", "client"))
        reply = continuation(request)
        self.events.append(("out", self.name, call.method_name))
        return reply

    def result(self, method: str, timeout: float = WAIT) -> CallResult:
        with self.done:
            assert self.done.wait_for(lambda: method in self.results, timeout), \
                f"{self.name}: no result for {method} within {timeout} s"
            return self.results[method]


@pytest.fixture
def handlers():
    return Handlers()


@pytest.fixture
def serve(handlers):
    servers = []

    def start(interceptors=()):
        service = RpcServiceHandler(SERVICE, handlers.method_handlers())
        server = dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0),
                              interceptors=interceptors).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace=1)


@pytest.fixture
def connect():
    clients = []

    def make(port: int, interceptors=()):
        client = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"),
                              interceptors=interceptors)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def call_every_kind(client) -> None:
    assert client.unary("plain")(b"hi", timeout=5) == b"hi"
    assert client.client_stream("join")(iter([b"a", b"b"]), timeout=5) == b"a,b"
    assert list(client.server_stream("split")(b"a,b,c", timeout=5)) == [b"a", b"b", b"c"]
    assert list(client.bidi_stream("chat")(iter([b"x", b"y"]), timeout=5)) == [b"X", b"Y"]


KINDS = {"plain": "UNARY", "join": "CLIENT_STREAM", "split": "SERVER_STREAM",
         "chat": "BIDI_STREAM"}


# -- order and call kinds ----------------------------------------------------------------


def test_server_interceptors_wrap_every_kind_first_outermost(serve, connect):
    events: list = []
    outer, inner = Recorder("outer", events), Recorder("inner", events)
    server = serve([outer, inner])
    call_every_kind(connect(server.port))
    for method, grpc_type in KINDS.items():
        for recorder in (outer, inner):
            result = recorder.result(method)
            assert result.code is StatusCode.OK and result.details == ""
            assert 0 < result.latency < 5
            call = recorder.calls[method]
            assert call.grpc_type == grpc_type
            assert call.service == SERVICE and call.method == f"/{SERVICE}/{method}"
            assert call.peer.startswith("ipv4:127.0.0.1:")
        assert [e[:2] for e in events if e[2] == method] == [
            ("in", "outer"), ("in", "inner"), ("out", "inner"), ("out", "outer"),
            ("done", "inner"), ("done", "outer")]
        # one status and one latency for the whole chain
        assert outer.result(method) == inner.result(method)


def test_client_interceptors_wrap_every_kind_first_outermost(serve, connect):
    events: list = []
    outer, inner = Recorder("outer", events), Recorder("inner", events)
    server = serve()
    call_every_kind(connect(server.port, [outer, inner]))
    for method, grpc_type in KINDS.items():
        for recorder in (outer, inner):
            result = recorder.results[method]  # known by the time the caller has it all
            assert result.code is StatusCode.OK and 0 < result.latency < 5
            assert recorder.calls[method].grpc_type == grpc_type
            assert recorder.calls[method].peer == f"ipv4:127.0.0.1:{server.port}"
        assert [e[:2] for e in events if e[2] == method] == [
            ("in", "outer"), ("in", "inner"), ("out", "inner"), ("out", "outer"),
            ("done", "inner"), ("done", "outer")]


def test_every_call_form_goes_through_the_chain(serve, connect):
    recorder = Recorder("r", [])
    client = connect(serve().port, [recorder])
    reply, call = client.unary("plain").with_call(b"a", 5, None, "gzip")
    assert reply == b"a" and call.code() is StatusCode.OK
    reply, call = client.client_stream("join").with_call(iter([b"b"]), timeout=5)
    assert reply == b"b"
    assert client.unary("plain")(b"c", 5, [("x-k", "v")], False, "gzip") == b"c"
    replies = client.server_stream("split")(b"d", 5, None, "gzip")
    with replies:
        assert list(replies) == [b"d"]
    assert replies.code() is StatusCode.OK and replies.trailing_metadata() == []
    assert {m: r.code for m, r in recorder.results.items()} == {
        "plain": StatusCode.OK, "join": StatusCode.OK, "split": StatusCode.OK}


def test_streaming_interceptors_may_wrap_both_iterators(serve, connect):
    seen = []

    class Upper(ServerInterceptor):
        def intercept_server(self, continuation, request, call):
            if call.call_type.request_streaming:
                request = (r + b"!" for r in request)
            replies = continuation(request)
            if call.call_type.response_streaming:
                return (b"<" + r + b">" for r in replies)
            return replies

    class Tap(ClientInterceptor):
        def intercept_client(self, continuation, request, call):
            if call.call_type.request_streaming:
                request = (seen.append(r) or r for r in request)
            return continuation(request)

    client = connect(serve([Upper()]).port, [Tap()])
    assert client.client_stream("join")(iter([b"a", b"b"]), timeout=5) == b"a!,b!"
    replies = client.bidi_stream("chat")(iter([b"x"]), timeout=5)
    assert list(replies) == [b"<X!>"]
    assert replies.code() is StatusCode.OK
    assert seen == [b"a", b"b", b"x"]


# -- metadata ------------------------------------------------------------------------------


def test_server_interceptors_read_and_add_metadata(serve, connect, handlers):
    events: list = []
    server = serve([Recorder("a", events, add_metadata=True),
                    Recorder("b", events, add_metadata=True)])
    client = connect(server.port)
    reply, call = client.unary("echo")(b"hi", metadata=[("x-user", "alice")], with_call=True,
                                       timeout=5)
    assert reply == b"hi"
    seen = handlers.seen_metadata
    assert ("x-user", "alice") in seen
    assert [kv for kv in seen if kv[0] in ("x-a", "x-b")] == [("x-a", "request"),
                                                              ("x-b", "request")]
    initial = call.initial_metadata()
    assert [kv for kv in initial if kv[0].startswith("x-")] == [
        ("x-a-initial", "i"), ("x-b-initial", "i"), ("x-handler-initial", "h")]
    trailing = call.trailing_metadata()
    assert [kv for kv in trailing if kv[0].startswith("x-")] == [
        ("x-a-trailing", "t"), ("x-b-trailing", "t"), ("x-handler-trailing", "h")]


def test_server_interceptor_metadata_goes_out_with_errors_and_streams(serve, connect):
    server = serve([Recorder("a", [], add_metadata=True)])
    client = connect(server.port)
    with pytest.raises(RpcError) as err:
        client.unary("missing")(b"", timeout=5)
    assert err.value.code is StatusCode.NOT_FOUND
    assert [kv for kv in err.value.trailing_metadata if kv[0].startswith("x-")] == [
        ("x-a-trailing", "t"), ("x-reason", "gone")]
    replies = client.server_stream("split")(b"a,b", timeout=5)
    assert list(replies) == [b"a", b"b"]
    assert ("x-a-initial", "i") in replies.initial_metadata()
    assert ("x-a-trailing", "t") in replies.trailing_metadata()


def test_client_interceptors_add_metadata_and_read_the_reply_metadata(serve, connect,
                                                                     handlers):
    events: list = []
    seen_initial = []

    class ReadsReply(ClientInterceptor):
        def intercept_client(self, continuation, request, call):
            reply = continuation(request)
            seen_initial.extend(call.call.initial_metadata())
            return reply

    server = serve()
    client = connect(server.port, [Recorder("a", events, add_metadata=True),
                                   ReadsReply(), Recorder("b", events, add_metadata=True)])
    assert client.unary("echo")(b"hi", metadata={"x-user": "bob"}, timeout=5) == b"hi"
    keys = [kv for kv in handlers.seen_metadata if kv[0].startswith("x-")]
    assert keys == [("x-user", "bob"), ("x-a", "client"), ("x-b", "client")]
    assert ("x-handler-initial", "h") in seen_initial


# -- the status and latency of every ending -------------------------------------------------


@pytest.mark.parametrize(("method", "code", "details"), [
    ("crash", StatusCode.UNKNOWN, "Exception calling application: a bug"),
    ("missing", StatusCode.NOT_FOUND, "no such thing"),
    ("locked", StatusCode.FAILED_PRECONDITION, "locked"),
])
def test_both_sides_observe_handler_errors(serve, connect, method, code, details):
    server_side, client_side = Recorder("s", []), Recorder("c", [])
    client = connect(serve([server_side]).port, [client_side])
    with pytest.raises(RpcError) as err:
        client.unary(method)(b"", timeout=5)
    assert err.value.code is code
    for result in (server_side.result(method), client_side.results[method]):
        assert (result.code, result.details) == (code, details)


def test_both_sides_observe_an_error_in_the_middle_of_a_stream(serve, connect):
    server_side, client_side = Recorder("s", []), Recorder("c", [])
    client = connect(serve([server_side]).port, [client_side])
    replies = client.server_stream("broken_stream")(b"", timeout=5)
    assert next(replies) == b"one"
    assert "broken_stream" not in client_side.results  # still running
    with pytest.raises(RpcError):
        next(replies)
    for result in (server_side.result("broken_stream"), client_side.results["broken_stream"]):
        assert (result.code, result.details) == (StatusCode.DATA_LOSS, "lost it")


def test_both_sides_observe_the_client_deadline(serve, connect):
    server_side, client_side = Recorder("s", []), Recorder("c", [])
    client = connect(serve([server_side]).port, [client_side])
    with pytest.raises(RpcError) as err:
        client.unary("slow")(b"", timeout=0.3)
    assert err.value.code is StatusCode.DEADLINE_EXCEEDED
    result = client_side.results["slow"]
    assert result.code is StatusCode.DEADLINE_EXCEEDED
    assert 0.25 < result.latency < 2
    # The client resets the stream at its deadline; the server's own timer may fire
    # first: either way the call ended there at the deadline, not when the handler quit.
    result = server_side.result("slow")
    assert result.code in (StatusCode.DEADLINE_EXCEEDED, StatusCode.CANCELLED)
    assert 0.2 < result.latency < 2


def test_server_observes_its_own_deadline(serve):
    """A client that sends grpc-timeout and waits: the server's timer ends the call."""
    server_side = Recorder("s", [])
    server = serve([server_side])
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":scheme", "http"),
                              (":path", f"/{SERVICE}/slow"), (":authority", "localhost"),
                              ("content-type", "application/grpc"), ("te", "trailers"),
                              ("grpc-timeout", "300m")])
        conn.send_data(1, b"\x00\x00\x00\x00\x00", end_stream=True)
        sock.sendall(conn.data_to_send())
        status = None
        deadline = time.monotonic() + WAIT
        while status is None and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived,
                                      h2.events.TrailersReceived)):
                    status = dict(event.headers).get(b"grpc-status", status)
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    assert status == b"4"
    result = server_side.result("slow")
    assert result.code is StatusCode.DEADLINE_EXCEEDED
    assert 0.25 < result.latency < 2  # when the status went out, not when the handler quit


def test_both_sides_observe_a_cancel(serve, connect):
    server_side, client_side = Recorder("s", []), Recorder("c", [])
    client = connect(serve([server_side]).port, [client_side])
    replies = client.server_stream("ticks")(b"", timeout=10)
    assert next(replies) == b"tick 0"
    assert replies.is_active()
    assert replies.cancel() is True
    assert replies.code() is StatusCode.CANCELLED
    assert client_side.results["ticks"].code is StatusCode.CANCELLED
    assert server_side.result("ticks").code is StatusCode.CANCELLED
    assert server_side.result("ticks").details == "Cancelled by the client"
    with pytest.raises(RpcError) as err:
        next(replies)
    assert err.value.code is StatusCode.CANCELLED


def test_a_dropped_reply_iterator_ends_as_cancelled(serve, connect):
    server_side, client_side = Recorder("s", []), Recorder("c", [])
    client = connect(serve([server_side]).port, [client_side])
    replies = client.server_stream("ticks")(b"", timeout=10)
    assert next(replies) == b"tick 0"
    del replies
    assert client_side.results["ticks"].code is StatusCode.CANCELLED
    assert server_side.result("ticks").code is StatusCode.CANCELLED


def test_a_failing_done_callback_is_logged_and_the_rest_still_run(serve, connect, caplog):
    after = Recorder("after", [])

    class Raises(ServerInterceptor):
        def intercept_server(self, continuation, request, call):
            call.add_done_callback(lambda result: 1 / 0)
            return continuation(request)

    client = connect(serve([after, Raises()]).port)
    with caplog.at_level(logging.ERROR, logger="dubbo.interceptors"):
        assert client.unary("plain")(b"x", timeout=5) == b"x"
        assert after.result("plain").code is StatusCode.OK
    assert any("done callback" in r.getMessage() for r in caplog.records)


# -- ending a call from an interceptor --------------------------------------------------------


def test_auth_rejects_without_running_the_handler(serve, connect, handlers):
    checked = []

    def verify(token: str) -> bool:
        checked.append(token)
        return token == "s3cret"

    audit = Recorder("audit", [])
    server = serve([audit, BearerTokenServerInterceptor(verify)])
    anonymous = connect(server.port)
    wrong = connect(server.port, [BearerTokenClientInterceptor("guess")])
    right = connect(server.port, [BearerTokenClientInterceptor(lambda: "s3cret")])

    for client, details in ((anonymous, "missing bearer token"), (wrong, "invalid token")):
        with pytest.raises(RpcError) as err:
            client.unary("plain")(b"x", timeout=5)
        assert (err.value.code, err.value.details) == (StatusCode.UNAUTHENTICATED, details)
        assert audit.result("plain").code is StatusCode.UNAUTHENTICATED
        del audit.results["plain"]
        sent = []
        with pytest.raises(RpcError) as err:
            client.client_stream("join")((sent.append(r) or r for r in [b"a"]), timeout=5)
        assert err.value.code is StatusCode.UNAUTHENTICATED
        with pytest.raises(RpcError) as err:
            list(client.bidi_stream("chat")(iter([b"a"]), timeout=5))
        assert err.value.code is StatusCode.UNAUTHENTICATED
    assert handlers.ran == []
    assert checked == ["guess", "guess", "guess"]

    assert right.unary("plain")(b"x", timeout=5) == b"x"
    assert list(right.server_stream("split")(b"a,b", timeout=5)) == [b"a", b"b"]
    assert handlers.ran == ["plain", "split"]


def test_a_raising_token_check_counts_as_a_rejection(serve, connect, handlers, caplog):
    def verify(token: str) -> bool:
        raise RuntimeError("token store down")

    server = serve([BearerTokenServerInterceptor(verify)])
    client = connect(server.port, [BearerTokenClientInterceptor("t")])
    with caplog.at_level(logging.ERROR, logger="dubbo.interceptors"):
        with pytest.raises(RpcError) as err:
            client.unary("plain")(b"x", timeout=5)
    assert err.value.code is StatusCode.UNAUTHENTICATED
    assert handlers.ran == []
    assert any("token check" in r.getMessage() for r in caplog.records)


def test_a_client_interceptor_can_end_a_call_before_it_goes_out(serve, connect, handlers):
    recorder = Recorder("r", [])

    class Deny(ClientInterceptor):
        def intercept_client(self, continuation, request, call):
            call.abort(StatusCode.PERMISSION_DENIED, "not from here")

    class Cached(ClientInterceptor):
        def intercept_client(self, continuation, request, call):
            return b"cached"

    server = serve()
    with pytest.raises(RpcError) as err:
        connect(server.port, [recorder, Deny()]).unary("plain")(b"x", timeout=5)
    assert err.value.code is StatusCode.PERMISSION_DENIED
    assert recorder.results["plain"].code is StatusCode.PERMISSION_DENIED
    reply, call = connect(server.port, [Cached()]).unary("plain")(b"x", timeout=5,
                                                                   with_call=True)
    assert (reply, call) == (b"cached", None)
    assert handlers.ran == []


# -- logging ----------------------------------------------------------------------------------


def test_logging_interceptor_writes_one_line_per_call(serve, connect, caplog):
    server = serve([LoggingInterceptor()])
    client = connect(server.port, [LoggingInterceptor("test.access")])
    with caplog.at_level(logging.INFO, logger="dubbo.access"), \
            caplog.at_level(logging.INFO, logger="test.access"):
        client.unary("plain")(b"x", timeout=5)
        with pytest.raises(RpcError):
            client.unary("missing")(b"", timeout=5)
        deadline = time.monotonic() + WAIT
        while len([r for r in caplog.records if r.name == "dubbo.access"]) < 2 and \
                time.monotonic() < deadline:
            time.sleep(0.01)
    lines = {r.name: [] for r in caplog.records}
    for record in caplog.records:
        lines[record.name].append(record.getMessage())
    server_lines, client_lines = lines["dubbo.access"], lines["test.access"]
    assert len(server_lines) == 2 and len(client_lines) == 2
    pattern = (r"{side} /{service}/{method} {status} \d+\.\d ms peer={peer}")
    import re
    assert re.fullmatch(pattern.format(side="server", service=SERVICE, method="plain",
                                       status="OK", peer=r"ipv4:127\.0\.0\.1:\d+"),
                        server_lines[0]), server_lines
    assert re.fullmatch(pattern.format(side="server", service=SERVICE, method="missing",
                                       status="NOT_FOUND 'no such thing'",
                                       peer=r"ipv4:127\.0\.0\.1:\d+"), server_lines[1])
    assert re.fullmatch(pattern.format(side="client", service=SERVICE, method="plain",
                                       status="OK", peer=rf"ipv4:127\.0\.0\.1:{server.port}"),
                        client_lines[0]), client_lines


# -- against grpcio --------------------------------------------------------------------------


def _identity(x):
    return x


def test_grpcio_client_against_our_server_with_interceptors(serve, handlers):
    recorder = Recorder("r", [], add_metadata=True)
    server = serve([recorder, BearerTokenServerInterceptor(lambda t: t == "ok")])
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        auth = [("authorization", "Bearer ok")]
        unary = channel.unary_unary(f"/{SERVICE}/echo", _identity, _identity)
        reply, call = unary.with_call(b"hi", metadata=auth + [("x-user", "g")], timeout=5)
        assert reply == b"hi"
        assert ("x-r-initial", "i") in call.initial_metadata()
        assert ("x-r-trailing", "t") in call.trailing_metadata()
        assert ("x-r", "request") in handlers.seen_metadata
        assert ("x-user", "g") in handlers.seen_metadata
        assert recorder.result("echo").code is StatusCode.OK
        del recorder.results["echo"]
        bidi = channel.stream_stream(f"/{SERVICE}/chat", _identity, _identity)
        assert list(bidi(iter([b"a", b"b"]), metadata=auth, timeout=5)) == [b"A", b"B"]
        with pytest.raises(grpc.RpcError) as err:
            unary(b"hi", timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        stream = channel.unary_stream(f"/{SERVICE}/ticks", _identity, _identity)
        replies = stream(b"", metadata=auth, timeout=10)
        assert next(replies) == b"tick 0"
        replies.cancel()
    assert recorder.result("echo").code is StatusCode.UNAUTHENTICATED
    assert recorder.result("chat").code is StatusCode.OK
    assert recorder.result("ticks").code is StatusCode.CANCELLED


class GrpcioService(grpc.GenericRpcHandler):
    def __init__(self) -> None:
        self.metadata: list = []

    def service(self, details):
        method = details.method.rsplit("/", 1)[-1]

        def unary(request, context):
            self.metadata.append(dict(context.invocation_metadata()))
            if request == b"deny":
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
            context.set_trailing_metadata([("x-grpcio", "yes")])
            return request

        def client_stream(requests, context):
            return b",".join(requests)

        def server_stream(request, context):
            yield from request.split(b",")

        def bidi(requests, context):
            for request in requests:
                yield request.upper()

        return {
            "echo": grpc.unary_unary_rpc_method_handler(unary),
            "join": grpc.stream_unary_rpc_method_handler(client_stream),
            "split": grpc.unary_stream_rpc_method_handler(server_stream),
            "chat": grpc.stream_stream_rpc_method_handler(bidi),
        }.get(method)


@pytest.fixture
def grpcio_server():
    service = GrpcioService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((service,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, service
    server.stop(None)


def test_our_client_with_interceptors_against_a_grpcio_server(grpcio_server, connect):
    port, service = grpcio_server
    events: list = []
    recorder = Recorder("r", events, add_metadata=True)
    client = connect(port, [recorder, BearerTokenClientInterceptor("tok")])
    reply, call = client.unary("echo")(b"hi", timeout=5, with_call=True)
    assert reply == b"hi" and ("x-grpcio", "yes") in call.trailing_metadata()
    assert service.metadata[-1]["authorization"] == "Bearer tok"
    assert service.metadata[-1]["x-r"] == "client"
    assert client.client_stream("join")(iter([b"a", b"b"]), timeout=5) == b"a,b"
    assert list(client.server_stream("split")(b"a,b", timeout=5)) == [b"a", b"b"]
    assert list(client.bidi_stream("chat")(iter([b"x"]), timeout=5)) == [b"X"]
    with pytest.raises(RpcError):
        client.unary("echo")(b"deny", timeout=5)
    with pytest.raises(RpcError):
        client.unary("nothing")(b"", timeout=5)
    results = recorder.results
    assert {m: (r.code, r.details) for m, r in results.items()} == {
        "echo": (StatusCode.PERMISSION_DENIED, "denied"),
        "join": (StatusCode.OK, ""), "split": (StatusCode.OK, ""), "chat": (StatusCode.OK, ""),
        "nothing": (StatusCode.UNIMPLEMENTED, "Method not found!"),
    }
    assert {recorder.calls[m].grpc_type for m in ("echo", "join", "split", "chat")} == {
        "UNARY", "CLIENT_STREAM", "SERVER_STREAM", "BIDI_STREAM"}


def test_grpcio_generic_handlers_run_inside_the_interceptors() -> None:
    # grpcio's per-call GenericRpcHandler is resolved at call time, not by add_service:
    # the auth check must still guard it.
    class Generic(grpc.GenericRpcHandler):
        def service(self, handler_call_details):  # type: ignore[no-untyped-def]
            if handler_call_details.method == "/test.Generic/echo":
                return grpc.unary_unary_rpc_method_handler(lambda request, context: request)
            return None

    auth = BearerTokenServerInterceptor(lambda token: token == "secret")
    server = dubbo.Server(ServiceConfig(host="127.0.0.1", port=0), interceptors=[auth])
    server.add_generic_rpc_handlers((Generic(),))
    server.start()
    try:
        url = f"tri://127.0.0.1:{server.port}/test.Generic"
        with dubbo.Client(ReferenceConfig.from_url(url)) as client:
            with pytest.raises(RpcError) as info:
                client.unary("echo")(b"x", timeout=5)
            assert info.value.code is StatusCode.UNAUTHENTICATED
        token = BearerTokenClientInterceptor("secret")
        with dubbo.Client(ReferenceConfig.from_url(url), interceptors=[token]) as client:
            assert client.unary("echo")(b"x", timeout=5) == b"x"
    finally:
        server.stop()
