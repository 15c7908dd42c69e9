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


def say_hello(request, context):
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
