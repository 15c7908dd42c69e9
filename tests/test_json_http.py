"""JSON on the wire: application/grpc+json (our client, grpclib's client), and unary
calls as plain HTTP the way Dubbo Java 3.3 answers them, driven by the real curl over
HTTP/1.1 and HTTP/2, plus raw sockets for the bounds (head and body sizes, silent
peers, keep-alive, pipelining) and the HTTP/1.1-or-HTTP/2 sniffing."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time

import greeter_pb2
import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.server.http1 import classify
from dubbo.wire import json_codec

SERVICE = "org.apache.dubbo.samples.proto.Greeter"
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")

Req, Reply = greeter_pb2.GreeterRequest, greeter_pb2.GreeterReply


# What the "hold" and "cancel" handlers saw (reset by the ``held`` fixture).
HELD: dict[str, threading.Event] = {}


def say_hello(request, context):
    if request.name == "hold":  # until the call ends under it
        HELD["entered"].set()
        context.add_callback(HELD["callback"].set)
        until = time.monotonic() + 5
        while context.is_active() and time.monotonic() < until:
            time.sleep(0.01)
        if not context.is_active():
            HELD["inactive"].set()
    if request.name == "cancel":
        context.cancel()
    if request.name == "boom":
        raise ValueError("boom!")
    if request.name == "missing":
        context.abort(dubbo.StatusCode.NOT_FOUND, "no such user")
    if request.name == "denied":
        raise dubbo.RpcError(dubbo.StatusCode.PERMISSION_DENIED, "go away")
    if request.name == "slow":
        time.sleep(0.5)
    metadata = dict(context.invocation_metadata())
    context.send_initial_metadata([("x-greeted", request.name)])
    suffix = f" [{metadata['x-tag']}]" if "x-tag" in metadata else ""
    return Reply(message=f"hello {request.name} from "
                         f"{threading.current_thread().name.split('-')[1]}{suffix}")


def server_stream(request):
    for i in range(3):
        yield Reply(message=f"{request.name} {i}")


def _handlers():
    return [
        RpcMethodHandler.unary(say_hello, "sayHello", Req.FromString, Reply.SerializeToString),
        RpcMethodHandler.server_stream(server_stream, "serverStream", Req.FromString,
                                       Reply.SerializeToString),
    ]


@pytest.fixture
def server():
    """The Greeter with protobuf handlers, a bytes-only service whose types come from
    its file_descriptor, and a bytes-only service nobody knows the types of."""
    started = []

    def start(**options):
        svc = RpcServiceHandler(SERVICE, _handlers())
        s = dubbo.Server(ServiceConfig(svc, host="127.0.0.1", port=0), **options)
        # Bytes in, bytes out, but the file descriptor names the types.
        s.add_service(RpcServiceHandler("org.apache.dubbo.samples.proto.Greeter2", [
            RpcMethodHandler.unary(lambda b: Reply(message="from bytes").SerializeToString(),
                                   "sayHello")], file_descriptor=_greeter2_file()))
        s.add_service(RpcServiceHandler("test.Opaque", [
            RpcMethodHandler.unary(lambda b: b, "echo")]))
        s.start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop(grace=1)


def _greeter2_file() -> bytes:
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto()
    greeter_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "greeter2.proto"
    proto.service[0].name = "Greeter2"
    proto.ClearField("message_type")
    proto.dependency.append(greeter_pb2.DESCRIPTOR.name)
    for method in proto.service[0].method:
        method.input_type = ".org.apache.dubbo.samples.proto.GreeterRequest"
        method.output_type = ".org.apache.dubbo.samples.proto.GreeterReply"
    return proto.SerializeToString()


def curl(port: int, path: str, body: str | None = '{"name":"x"}', *extra: str,
         content_type: str | None = "application/json", http2: bool = False,
         ) -> tuple[int, dict[str, str], str]:
    """Run curl; (HTTP status, response headers, body)."""
    args = [CURL, "-sS", "-D", "-", "--max-time", "20"]
    if http2:
        args.append("--http2-prior-knowledge")
    if content_type:
        args += ["-H", f"content-type: {content_type}"]
    if body is not None:
        args += ["--data-binary", body]
    args += [*extra, f"http://127.0.0.1:{port}{path}"]
    done = subprocess.run(args, capture_output=True, timeout=30)  # bytes: keep the CRLFs
    assert done.returncode == 0, done.stderr
    head, _, text = done.stdout.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, text


# -- curl: HTTP/1.1 and HTTP/2 ------------------------------------------------------

@needs_curl
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_curl_calls_a_unary_method_and_gets_json(server, http2):
    s = server()
    status, headers, body = curl(s.port, f"/{SERVICE}/sayHello", http2=http2)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body.encode())
    assert json.loads(body) == {"message": "hello x from worker"}  # ran on a worker thread
    assert headers["x-greeted"] == "x"  # initial metadata comes back as headers


@needs_curl
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_curl_errors_are_http_statuses_with_a_json_body(server, http2):
    s = server()
    cases = [
        (f"/{SERVICE}/sayHello", '{"name":"boom"}', "application/json", 500,
         "Exception calling application: boom!"),
        (f"/{SERVICE}/sayHello", '{"name":"missing"}', "application/json", 404, "no such user"),
        (f"/{SERVICE}/sayHello", '{"name":"denied"}', "application/json", 403, "go away"),
        (f"/{SERVICE}/sayHello", '{"name":', "application/json", 400, "bad JSON request"),
        (f"/{SERVICE}/sayHello", '{"name":"x"}', "text/plain", 415, "unsupported content-type"),
        (f"/{SERVICE}/nope", '{}', "application/json", 404, "Method not found"),
        ("/no.Such/method", '{}', "application/json", 404, "Method not found"),
        (f"/{SERVICE}/serverStream", '{}', "application/json", 501, "server-stream method"),
        ("/test.Opaque/echo", '{}', "application/json", 415, "message types are unknown"),
    ]
    for path, body, content_type, want_status, want_message in cases:
        status, headers, text = curl(s.port, path, body, content_type=content_type,
                                     http2=http2)
        assert status == want_status, (path, body, text)
        assert headers["content-type"] == "application/json"
        error = json.loads(text)
        assert error["status"] == str(want_status)  # Java's ErrorResponse: a string
        assert want_message in error["message"], text


@needs_curl
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_curl_get_is_405_and_a_trailing_slash_is_tolerated(server, http2):
    s = server()
    status, headers, _ = curl(s.port, f"/{SERVICE}/sayHello", None, content_type=None,
                              http2=http2)
    assert status == 405 and headers["allow"] == "POST"
    status, _, body = curl(s.port, f"/{SERVICE}/sayHello/", http2=http2)
    assert status == 200 and json.loads(body)["message"].startswith("hello x")


@needs_curl
def test_curl_metadata_and_types_from_descriptors_and_builtin_services(server):
    s = server()
    _, _, body = curl(s.port, f"/{SERVICE}/sayHello", '{"name":"m"}', "-H", "x-tag: blue")
    assert json.loads(body)["message"].endswith("[blue]")
    # bytes handlers, types from the service's file_descriptor
    status, _, body = curl(s.port, "/org.apache.dubbo.samples.proto.Greeter2/sayHello")
    assert (status, json.loads(body)) == (200, {"message": "from bytes"})
    # the built-in health service, types from its own descriptor pool
    status, _, body = curl(s.port, "/grpc.health.v1.Health/Check", "{}", http2=True)
    assert (status, json.loads(body)) == (200, {"status": "SERVING"})


@needs_curl
def test_curl_keeps_the_http1_connection_alive_between_calls(server):
    s = server()
    url = f"http://127.0.0.1:{s.port}/{SERVICE}/sayHello"
    done = subprocess.run(
        [CURL, "-sS", "-v", "-H", "content-type: application/json", "-d", '{"name":"a"}', url,
         "--next", "-H", "content-type: application/json", "-d", '{"name":"b"}', url],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "hello a" in done.stdout and "hello b" in done.stdout
    assert "Re-using existing connection" in done.stderr


@needs_curl
def test_curl_deadline_header_and_body_limit(server):
    s = server(max_receive_message_size=1000)
    status, _, text = curl(s.port, f"/{SERVICE}/sayHello", '{"name":"slow"}',
                           "-H", "tri-service-timeout: 100")
    assert status == 504, text
    big = json.dumps({"name": "x" * 2000})
    for http2 in (False, True):
        status, _, text = curl(s.port, f"/{SERVICE}/sayHello", big, http2=http2)
        assert status == 413, text
    assert curl(s.port, f"/{SERVICE}/sayHello")[0] == 200  # the server goes on


# -- HTTP/1.1 bounds, with raw sockets ---------------------------------------------

def _request(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


def _read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def test_a_silent_http1_peer_is_disconnected_after_handshake_timeout(server):
    s = server(handshake_timeout=0.5)
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.sendall(b"POST /a/b HTTP/1.1\r\nHost: x\r\n")  # head never finished
        started = time.monotonic()
        data = _read_until_closed(sock)
        assert time.monotonic() - started < 5
        assert data.startswith(b"HTTP/1.1 408")
    with socket.create_connection(("127.0.0.1", s.port)) as sock:  # idle keep-alive
        sock.sendall(_request(f"/{SERVICE}/sayHello", b'{"name":"k"}'))
        data = _read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200") and data.count(b"HTTP/1.1") == 1


def test_http1_head_over_max_header_list_size_is_431(server):
    s = server(max_header_list_size=4096)
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.sendall(_request(f"/{SERVICE}/sayHello", b"{}",
                              b"x-big: " + b"a" * 8000 + b"\r\n"))
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 431")


def test_http1_declared_body_over_the_limit_is_413_before_it_is_read(server):
    s = server(max_receive_message_size=1000)
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.sendall(b"POST /%s/sayHello HTTP/1.1\r\nHost: x\r\ncontent-type: application/json"
                     b"\r\ncontent-length: 100000000\r\n\r\n" % SERVICE.encode())
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 413")


def test_http1_pipelined_requests_are_answered_in_order_and_keepalive_is_bounded(server):
    s = server()
    s.http.max_requests_per_connection = 3
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.sendall(b"".join(_request(f"/{SERVICE}/sayHello", b'{"name":"%d"}' % i)
                              for i in range(5)))
        data = _read_until_closed(sock)
    replies = data.split(b"HTTP/1.1 ")[1:]
    assert len(replies) == 3  # then the server closes: the keep-alive bound
    assert [b"hello %d " % i in r for i, r in enumerate(replies)] == [True] * 3
    assert b"connection: close" in replies[2].lower()


def test_http1_connection_is_closed_by_stop_and_counts_against_max_connections(server):
    s = server(max_connections=1)
    sock = socket.create_connection(("127.0.0.1", s.port))
    try:
        sock.sendall(_request(f"/{SERVICE}/sayHello", b'{"name":"a"}'))
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", s.port)) as second:  # refused: full
            assert _read_until_closed(second) == b""
        s.stop(grace=1)
        assert _read_until_closed(sock) == b""
    finally:
        sock.close()


# -- telling HTTP/1.1 from the HTTP/2 preface -----------------------------------------

def test_classify_first_bytes():
    assert classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == "h2"
    assert classify(b"PRI * HT") is None  # could still be the preface
    assert classify(b"POS") is None
    assert classify(b"POST /a/b HTTP/1.1\r\n") == "http1"
    assert classify(b"GET / HTTP/1.1\r\n") == "http1"
    assert classify(b"\x16\x03\x01") == "h2"  # garbage goes to HTTP/2, which refuses it


def test_a_preface_sent_in_pieces_still_makes_an_http2_connection(server):
    s = server()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    preface = conn.data_to_send()
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.settimeout(10)
        for piece in (preface[:3], preface[3:10], preface[10:]):
            sock.sendall(piece)
            time.sleep(0.05)
        events = conn.receive_data(sock.recv(65536))
        assert any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)


def test_a_preface_already_there_starts_http2_at_once_without_a_sniffer(server, monkeypatch):
    from dubbo.server import http1

    sniffed = []
    monkeypatch.setattr(http1.Sniffer, "start", lambda self: sniffed.append(self))
    s = server()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    ours, theirs = socket.socketpair()
    with ours:
        ours.settimeout(10)
        ours.sendall(conn.data_to_send())  # there before the server looks
        s._adopt(theirs)  # accepted as a plaintext connection is
        events = conn.receive_data(ours.recv(65536))
        assert any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)
        assert sniffed == []


# -- application/grpc+json --------------------------------------------------------

def test_grpc_json_with_our_client(server):
    s = server()
    reference = ReferenceConfig.from_url(f"tri://127.0.0.1:{s.port}/{SERVICE}")
    with dubbo.Client(reference, content_type="application/grpc+json") as client:
        unary = client.unary("sayHello", json_codec.serializer(),
                             json_codec.deserializer(Reply))
        assert unary(Req(name="j")).message == "hello j from worker"
        raw = client.unary("sayHello")  # the JSON bytes as they travel
        assert json.loads(raw(b'{"name":"r"}')) == {"message": "hello r from worker"}
        stream = client.server_stream("serverStream", json_codec.serializer(),
                                      json_codec.deserializer(Reply))
        assert [r.message for r in stream(Req(name="s"))] == ["s 0", "s 1", "s 2"]
        with pytest.raises(dubbo.RpcError) as info:
            raw(b"{not json")
        assert info.value.code is dubbo.StatusCode.INTERNAL
    opaque = ReferenceConfig.from_url(f"tri://127.0.0.1:{s.port}/test.Opaque")
    with dubbo.Client(opaque, content_type="application/grpc+json") as client:
        with pytest.raises(dubbo.RpcError) as info:
            client.unary("echo")(b"{}")
        assert info.value.code is dubbo.StatusCode.UNIMPLEMENTED
        assert "message types are unknown" in info.value.details


def test_grpc_json_with_grpclibs_client(server):
    """grpclib speaks application/grpc+json with a JSON codec: a real peer."""
    grpclib_client = pytest.importorskip("grpclib.client")
    from grpclib.encoding.base import CodecBase

    class JsonCodec(CodecBase):
        __content_subtype__ = "json"

        def encode(self, message, message_type):
            return json_codec.message_to_json(message)

        def decode(self, data, message_type):
            return json_codec.json_to_message(data, message_type)

    s = server()

    async def call():
        channel = grpclib_client.Channel("127.0.0.1", s.port, codec=JsonCodec())
        try:
            method = grpclib_client.UnaryUnaryMethod(
                channel, f"/{SERVICE}/sayHello", Req, Reply)
            reply = await method(Req(name="grpclib"), timeout=10)
            stream = grpclib_client.UnaryStreamMethod(
                channel, f"/{SERVICE}/serverStream", Req, Reply)
            replies = await stream(Req(name="g"), timeout=10)
            return reply, replies
        finally:
            channel.close()

    reply, replies = asyncio.run(call())
    assert reply.message == "hello grpclib from worker"
    assert [r.message for r in replies] == ["g 0", "g 1", "g 2"]


# -- plain HTTP on HTTP/2, frame by frame (h2 as the client) ------------------------

@pytest.fixture
def held():
    HELD.clear()
    HELD.update(entered=threading.Event(), callback=threading.Event(),
                inactive=threading.Event())
    return HELD


class H2Peer:
    """A bare HTTP/2 client: what curl cannot show (resets, refusals, timing)."""

    def __init__(self, port: int) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(5)
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def post(self, stream_id: int, path: str, body: bytes | None = b'{"name":"x"}',
             content_type: str = "application/json", end: bool = True) -> None:
        self.conn.send_headers(stream_id, [
            (":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"),
            (":path", path), ("content-type", content_type)],
            end_stream=body is None and end)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end)
        self.flush()

    def until(self, done, timeout: float = 5.0) -> list[h2.events.Event]:
        """Read until ``done(events)``; every event so far."""
        deadline = time.monotonic() + timeout
        while not done(self.events):
            assert time.monotonic() < deadline, self.events
            data = self.sock.recv(65536)
            assert data, f"connection closed: {self.events}"
            self.events += self.conn.receive_data(data)
            self.flush()
        return self.events

    def of(self, stream_id: int, kind: type) -> list:
        return [e for e in self.events
                if isinstance(e, kind) and getattr(e, "stream_id", None) == stream_id]

    def ended(self, stream_id: int):
        return lambda events: self.of(stream_id, h2.events.StreamEnded) or \
            self.of(stream_id, h2.events.StreamReset)

    def response(self, stream_id: int) -> tuple[int, bytes]:
        headers = dict(self.of(stream_id, h2.events.ResponseReceived)[0].headers)
        body = b"".join(e.data for e in self.of(stream_id, h2.events.DataReceived))
        return int(headers[":status"]), body

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def h2peer():
    peers = []

    def connect(port: int) -> H2Peer:
        peers.append(H2Peer(port))
        return peers[-1]

    yield connect
    for peer in peers:
        peer.close()


def test_http2_early_answer_is_not_reset_and_the_rest_of_the_body_is_taken(server, h2peer):
    """A refusal answered from the headers alone (415 here) is a whole response and no
    RST_STREAM: curl drops a response whose stream is reset while it still sends."""
    s = server()
    peer = h2peer(s.port)
    peer.post(1, f"/{SERVICE}/sayHello", b'{"name":', content_type="text/plain", end=False)
    peer.until(peer.ended(1))
    status, body = peer.response(1)
    assert status == 415 and json.loads(body)["status"] == "415"
    peer.conn.send_data(1, b'"x"}' * 1000, end_stream=True)  # the rest of the body
    peer.post(3, f"/{SERVICE}/sayHello")  # the connection goes on
    peer.until(peer.ended(3))
    assert peer.response(3)[0] == 200
    assert not peer.of(1, h2.events.StreamReset)


def test_http2_body_over_the_limit_is_413_then_reset_no_error(server, h2peer):
    """A body over max_receive_message_size is answered 413 as it arrives, and a client
    still sending is told to stop (RST_STREAM NO_ERROR, RFC 9113 §8.1)."""
    s = server(max_receive_message_size=1000)
    peer = h2peer(s.port)
    peer.post(1, f"/{SERVICE}/sayHello", b'{"name":"' + b"x" * 1500, end=False)
    peer.until(lambda events: peer.of(1, h2.events.StreamReset))
    status, body = peer.response(1)
    assert status == 413 and "over 1000 bytes" in json.loads(body)["message"]
    assert peer.of(1, h2.events.StreamEnded)  # the whole response came first
    assert peer.of(1, h2.events.StreamReset)[0].error_code == h2.errors.ErrorCodes.NO_ERROR


@needs_curl
def test_http2_deadline_is_answered_504_while_the_handler_still_runs(server):
    s = server()
    started = time.monotonic()
    status, _, text = curl(s.port, f"/{SERVICE}/sayHello", '{"name":"slow"}',
                           "-H", "tri-service-timeout: 100", http2=True)
    assert status == 504 and json.loads(text)["status"] == "504", text
    assert time.monotonic() - started < 0.45  # the handler sleeps 0.5 s


def test_http2_excess_streams_are_refused_and_a_client_reset_ends_the_handler(
        server, h2peer, held):
    s = server(max_concurrent_streams=1)
    peer = h2peer(s.port)
    # Both before the server's SETTINGS are read: h2 does not hold the second back.
    peer.post(1, f"/{SERVICE}/sayHello", b'{"name":"hold"}')
    peer.post(3, f"/{SERVICE}/sayHello")
    peer.until(lambda events: peer.of(3, h2.events.StreamReset))
    assert peer.of(3, h2.events.StreamReset)[0].error_code == \
        h2.errors.ErrorCodes.REFUSED_STREAM
    assert held["entered"].wait(5)
    peer.conn.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    peer.flush()
    assert held["inactive"].wait(5)  # context.is_active() turned False
    assert held["callback"].wait(5)  # add_callback functions ran
    assert not peer.of(1, h2.events.ResponseReceived)


def test_http2_context_cancel_resets_the_stream(server, h2peer):
    s = server()
    peer = h2peer(s.port)
    peer.post(1, f"/{SERVICE}/sayHello", b'{"name":"cancel"}')
    peer.until(peer.ended(1))
    assert peer.of(1, h2.events.StreamReset)[0].error_code == h2.errors.ErrorCodes.CANCEL
    assert not peer.of(1, h2.events.ResponseReceived)
