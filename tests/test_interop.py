"""grpcio <-> dubbo interop, every test run for all four client/server pairings.

Test ids end in ``[<client>-<server>]``: ``-k grpcio-grpcio`` runs the grpcio client
against the grpcio server, which checks the tests themselves; ``-k dubbo`` runs every
pairing that involves dubbo.
"""

from __future__ import annotations

import queue
import random
import time
from concurrent.futures import ThreadPoolExecutor

import greeter_pb2
import pytest
from peers import (
    BIDI_STREAM,
    CLIENT_STREAM,
    IMPLS,
    SERVER_STREAM,
    UNARY,
    Fail,
    Overlap,
    Rig,
    call_error,
    rpc_error_types,
)

pytestmark = pytest.mark.timeout(60)

GREETER = "org.apache.dubbo.samples.proto.Greeter"
Req = greeter_pb2.GreeterRequest
Reply = greeter_pb2.GreeterReply
REQ_SER = Req.SerializeToString
REQ_DE = Req.FromString
REPLY_SER = Reply.SerializeToString
REPLY_DE = Reply.FromString
PROTO = {"request_deserializer": REQ_DE, "response_serializer": REPLY_SER}

PAIRS = [(c, s) for c in IMPLS for s in IMPLS]


@pytest.fixture(params=PAIRS, ids=[f"{c}-{s}" for c, s in PAIRS])
def rig(request):
    client_impl, server_impl = request.param
    r = Rig(client_impl, server_impl)
    yield r
    r.close()


def expect_error(fn, *args, **kwargs):
    """Run fn, which must fail with an RPC error; returns (code name, details)."""
    with pytest.raises(rpc_error_types()) as info:
        result = fn(*args, **kwargs)
        # a streaming call may only fail while being read
        if hasattr(result, "__next__"):
            list(result)
    return call_error(info.value)


# --------------------------------------------------------------------------- handlers


def say_hello(request, context):
    return Reply(message=f"hello {request.name}")


def client_stream(request_iterator, context):
    return Reply(message=",".join(r.name for r in request_iterator))


def server_stream(request, context):
    for i in range(3):
        yield Reply(message=f"{request.name}-{i}")


def bi_stream(request_iterator, context):
    for r in request_iterator:
        yield Reply(message=f"echo {r.name}")


GREETER_HANDLERS = {
    "sayHello": (UNARY, say_hello),
    "clientStream": (CLIENT_STREAM, client_stream),
    "serverStream": (SERVER_STREAM, server_stream),
    "biStream": (BIDI_STREAM, bi_stream),
}


# --------------------------------------------------------------------------- the four kinds


def test_unary_proto(rig):
    client = rig.client(rig.serve(GREETER_HANDLERS, **PROTO))
    call = client.unary("sayHello", REQ_SER, REPLY_DE)
    reply = call(Req(name="dubbo"), timeout=10)
    assert isinstance(reply, Reply)
    assert reply.message == "hello dubbo"
    # a second call on the same client and connection
    assert call(Req(name="again"), timeout=10).message == "hello again"


def test_client_stream_proto(rig):
    client = rig.client(rig.serve(GREETER_HANDLERS, **PROTO))
    call = client.client_stream("clientStream", REQ_SER, REPLY_DE)
    reply = call(iter([Req(name="a"), Req(name="b"), Req(name="c")]), timeout=10)
    assert reply.message == "a,b,c"


def test_server_stream_proto(rig):
    client = rig.client(rig.serve(GREETER_HANDLERS, **PROTO))
    call = client.server_stream("serverStream", REQ_SER, REPLY_DE)
    replies = [r.message for r in call(Req(name="x"), timeout=10)]
    assert replies == ["x-0", "x-1", "x-2"]


def test_bidi_stream_proto(rig):
    client = rig.client(rig.serve(GREETER_HANDLERS, **PROTO))
    call = client.bidi_stream("biStream", REQ_SER, REPLY_DE)
    names = ["hello", "world", "from", "dubbo-python"]
    replies = [r.message for r in call((Req(name=n) for n in names), timeout=10)]
    assert replies == [f"echo {n}" for n in names]


RAW = bytes(range(256)) * 3 + b"\x00\xff tail"


def raw_unary(request, context):
    assert isinstance(request, bytes), type(request)
    return b"got:" + request[::-1]


def raw_bidi(request_iterator, context):
    for r in request_iterator:
        assert isinstance(r, bytes), type(r)
        yield r[::-1] + b"!"


def test_unary_raw_bytes(rig):
    client = rig.client(rig.serve({"raw": (UNARY, raw_unary)}))
    reply = client.unary("raw")(RAW, timeout=10)
    assert isinstance(reply, bytes)
    assert reply == b"got:" + RAW[::-1]


def test_bidi_raw_bytes(rig):
    client = rig.client(rig.serve({"rawBidi": (BIDI_STREAM, raw_bidi)}))
    payloads = [RAW, b"x", RAW[:100], b"\x00" * 17]
    replies = list(client.bidi_stream("rawBidi")(iter(payloads), timeout=10))
    assert all(isinstance(r, bytes) for r in replies)
    assert replies == [p[::-1] + b"!" for p in payloads]


# --------------------------------------------------------------------------- errors

ERROR_DETAILS = "no such user: ü ✓ 100%"


def test_error_status_and_message(rig):
    def lookup(request, context):
        raise Fail("NOT_FOUND", ERROR_DETAILS)

    client = rig.client(rig.serve({"sayHello": (UNARY, lookup)}, **PROTO))
    code, details = expect_error(
        client.unary("sayHello", REQ_SER, REPLY_DE), Req(name="nobody"), timeout=10
    )
    assert (code, details) == ("NOT_FOUND", ERROR_DETAILS)


def test_server_stream_error_after_two_replies(rig):
    def two_then_fail(request, context):
        yield Reply(message="r0")
        yield Reply(message="r1")
        raise Fail("NOT_FOUND", ERROR_DETAILS)

    client = rig.client(rig.serve({"serverStream": (SERVER_STREAM, two_then_fail)}, **PROTO))
    replies = client.server_stream("serverStream", REQ_SER, REPLY_DE)(Req(name="x"), timeout=10)
    received = []
    with pytest.raises(rpc_error_types()) as info:
        for reply in replies:
            received.append(reply.message)
    assert received == ["r0", "r1"]
    assert call_error(info.value) == ("NOT_FOUND", ERROR_DETAILS)


def test_handler_exception_is_unknown(rig):
    def crash(request, context):
        raise ValueError("boom")

    client = rig.client(rig.serve({"sayHello": (UNARY, crash)}, **PROTO))
    call = client.unary("sayHello", REQ_SER, REPLY_DE)
    code, details = expect_error(call, Req(name="x"), timeout=10)
    assert code == "UNKNOWN", (code, details)
    if rig.server_impl == "dubbo":
        assert "boom" in details, details
    # the server goes on serving after a handler crashed
    code, _ = expect_error(call, Req(name="y"), timeout=10)
    assert code == "UNKNOWN"


def test_unknown_method_is_unimplemented(rig):
    client = rig.client(rig.serve(GREETER_HANDLERS, **PROTO))
    code, details = expect_error(
        client.unary("noSuchMethod", REQ_SER, REPLY_DE), Req(name="x"), timeout=10
    )
    assert code == "UNIMPLEMENTED", (code, details)
    # the known method on the same connection still works
    assert client.unary("sayHello", REQ_SER, REPLY_DE)(Req(name="ok"), timeout=10).message == (
        "hello ok"
    )


def test_unknown_service_is_unimplemented(rig):
    port = rig.serve(GREETER_HANDLERS, **PROTO)
    client = rig.client(port, service="org.example.NoSuchService")
    code, details = expect_error(
        client.unary("sayHello", REQ_SER, REPLY_DE), Req(name="x"), timeout=10
    )
    assert code == "UNIMPLEMENTED", (code, details)


# --------------------------------------------------------------------------- sizes and volume

MIB4 = 4 * 1024 * 1024


def echo(request, context):
    return request


@pytest.mark.parametrize("size", [MIB4 - 64, MIB4], ids=["4MiB-64", "4MiB-exact"])
def test_large_message_each_way(rig, size):
    client = rig.client(rig.serve({"echo": (UNARY, echo)}))
    payload = random.Random(size).randbytes(size)
    reply = client.unary("echo")(payload, timeout=30)
    assert len(reply) == size
    assert reply == payload


def test_ten_thousand_message_server_stream(rig):
    n = 10_000

    def many(request, context):
        for i in range(n):
            yield Reply(message=str(i))

    client = rig.client(rig.serve({"serverStream": (SERVER_STREAM, many)}, **PROTO))
    replies = [
        r.message
        for r in client.server_stream("serverStream", REQ_SER, REPLY_DE)(Req(name="n"), timeout=40)
    ]
    assert len(replies) == n
    assert replies == [str(i) for i in range(n)]


def test_concurrent_unary_calls_one_client(rig):
    overlap = Overlap()

    def slow_hello(request, context):
        with overlap.running():
            time.sleep(0.02)
            return Reply(message=f"hello {request.name}")

    client = rig.client(rig.serve({"sayHello": (UNARY, slow_hello)}, **PROTO))
    call = client.unary("sayHello", REQ_SER, REPLY_DE)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: call(Req(name=f"n{i}"), timeout=20).message, range(100)))
    assert results == [f"hello n{i}" for i in range(100)]
    assert overlap.peak > 1, "calls from 16 threads on one client never overlapped on the server"


@pytest.mark.timeout(30)
def test_bidi_lockstep_ping_pong(rig):
    """Each request is produced only after the previous reply arrived: replies must be
    readable while the request iterator is still running."""
    rounds = 20
    client = rig.client(rig.serve({"biStream": (BIDI_STREAM, bi_stream)}, **PROTO))
    got = queue.Queue()
    produced = []

    def requests():
        for i in range(rounds):
            produced.append(i)
            yield Req(name=f"ping {i}")
            # wait for the reply to this request before producing the next one
            reply = got.get(timeout=10)
            assert reply == f"echo ping {i}"

    replies = []
    for reply in client.bidi_stream("biStream", REQ_SER, REPLY_DE)(requests(), timeout=25):
        replies.append(reply.message)
        got.put(reply.message)
    assert replies == [f"echo ping {i}" for i in range(rounds)]
    assert produced == list(range(rounds))


# --------------------------------------------------------------------------- call features


def test_client_metadata_reaches_handler(rig):
    def whoami(request, context):
        metadata = list(context.invocation_metadata())
        users = [value for key, value in metadata if key == "x-user"]
        return Reply(message="|".join(users) if users else f"missing in {metadata!r}")

    client = rig.client(rig.serve({"sayHello": (UNARY, whoami)}, **PROTO))
    reply = client.unary("sayHello", REQ_SER, REPLY_DE)(
        Req(name="x"), timeout=10, metadata=[("x-user", "alice")]
    )
    assert reply.message == "alice"


def test_deadline_exceeded(rig):
    def sleepy(request, context):
        # sleeps 3 s, or less once the call is over, so teardown need not wait
        end = time.monotonic() + 3
        while time.monotonic() < end and context.is_active():
            time.sleep(0.02)
        return Reply(message="too late")

    client = rig.client(rig.serve({"sayHello": (UNARY, sleepy)}, **PROTO))
    call = client.unary("sayHello", REQ_SER, REPLY_DE)
    start = time.monotonic()
    code, details = expect_error(call, Req(name="x"), timeout=0.5)
    elapsed = time.monotonic() - start
    assert code == "DEADLINE_EXCEEDED", (code, details)
    assert elapsed < 1.5, f"DEADLINE_EXCEEDED only after {elapsed:.2f} s"


def test_empty_message_unary(rig):
    assert REQ_SER(Req()) == b""

    def describe(request, context):
        return Reply(message=f"name={request.name!r}")

    client = rig.client(rig.serve({"sayHello": (UNARY, describe)}, **PROTO))
    reply = client.unary("sayHello", REQ_SER, REPLY_DE)(Req(), timeout=10)
    assert reply.message == "name=''"


def test_empty_messages_in_client_stream(rig):
    def count(request_iterator, context):
        names = [r.name for r in request_iterator]
        return Reply(message=f"{len(names)}:{names!r}")

    client = rig.client(rig.serve({"clientStream": (CLIENT_STREAM, count)}, **PROTO))
    reply = client.client_stream("clientStream", REQ_SER, REPLY_DE)(
        iter([Req(), Req(name="x"), Req()]), timeout=10
    )
    assert reply.message == "3:['', 'x', '']"
