"""Packing messages into shared DATA frames must never hold one back from a live stream.

A fast producer's messages travel together; a message from a producer that then goes
quiet (sleeps, waits for an event, waits for the next request) must still reach the
peer at once (within the 1 ms packing delay, plus scheduling). The peer on the other
end is grpcio, so this is what a real client or server sees.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import dubbo
from dubbo.configs import ReferenceConfig
from dubbo.proxy.handlers import RpcMethodHandler

SERVICE = "test.Pack"
PROMPT = 0.25  # generous for a loaded 2-core CI machine; the packing delay is 1 ms


@pytest.fixture
def dubbo_server(serve_dubbo):
    return lambda *handlers: serve_dubbo(SERVICE, *handlers)


@pytest.fixture
def grpc_channel():
    channels = []

    def connect(port):
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return channel

    yield connect
    for channel in channels:
        channel.close()


def _arrivals(replies, count):
    """Each reply with the monotonic time it arrived."""
    out = []
    for reply in replies:
        out.append((reply, time.monotonic()))
        if len(out) == count:
            break
    return out


@pytest.mark.timeout(30)
def test_reply_of_a_slow_producer_is_sent_at_once(dubbo_server, grpc_channel):
    yielded = {}

    def ticker(request):
        for i in range(3):
            yielded[i] = time.monotonic()
            yield b"tick %d" % i
            time.sleep(0.5)

    server = dubbo_server(RpcMethodHandler.server_stream(ticker, "ticker"))
    stub = grpc_channel(server.port).unary_stream(f"/{SERVICE}/ticker")
    for i, (reply, arrived) in enumerate(_arrivals(stub(b"", timeout=20), 3)):
        assert reply == b"tick %d" % i
        assert arrived - yielded[i] < PROMPT, f"reply {i} waited {arrived - yielded[i]:.3f}s"


@pytest.mark.timeout(30)
def test_burst_then_block_is_flushed_without_waiting_for_the_next_reply(dubbo_server,
                                                                         grpc_channel):
    release = threading.Event()
    burst_done = {}

    def burst(request):
        for i in range(50):
            yield b"burst %d" % i
        burst_done["at"] = time.monotonic()
        release.wait(10)  # quiet for long after a fast burst
        yield b"after"

    server = dubbo_server(RpcMethodHandler.server_stream(burst, "burst"))
    stub = grpc_channel(server.port).unary_stream(f"/{SERVICE}/burst")
    replies = stub(b"", timeout=20)
    got = _arrivals(replies, 50)
    assert [r for r, _ in got] == [b"burst %d" % i for i in range(50)]
    assert got[-1][1] - burst_done["at"] < PROMPT
    release.set()
    assert next(replies) == b"after"


@pytest.mark.timeout(30)
def test_bidi_replies_go_out_before_the_handler_waits_for_requests(dubbo_server,
                                                                    grpc_channel):
    def fan_out(requests):
        for request in requests:
            for i in range(3):  # several quick replies, then block on the next request
                yield request + b" %d" % i

    server = dubbo_server(RpcMethodHandler.bi_stream(fan_out, "fanOut"))
    stub = grpc_channel(server.port).stream_stream(f"/{SERVICE}/fanOut")
    gate = threading.Semaphore(0)

    def requests():
        for word in (b"a", b"b", b"c"):
            yield word
            assert gate.acquire(timeout=PROMPT * 4), "replies did not come back"

    got = []
    started = time.monotonic()
    for reply in stub(requests(), timeout=20):
        got.append(reply)
        if len(got) % 3 == 0:
            gate.release()
    assert got == [w + b" %d" % i for w in (b"a", b"b", b"c") for i in range(3)]
    assert time.monotonic() - started < 3 * PROMPT * 4


@pytest.mark.timeout(30)
def test_client_request_burst_then_block_reaches_the_server_at_once():
    seen: list[float] = []
    enough = threading.Event()

    def count(requests, context):
        for _ in requests:
            seen.append(time.monotonic())
            if len(seen) == 20:
                enough.set()
        return b"%d" % len(seen)

    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        SERVICE, {"count": grpc.stream_unary_rpc_method_handler(count)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"))
    release = threading.Event()
    burst_done = {}

    def requests():
        for i in range(20):
            yield b"r%d" % i
        burst_done["at"] = time.monotonic()
        release.wait(10)

    try:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(client.client_stream("count"), requests(), timeout=20)
            assert enough.wait(5), f"server saw {len(seen)} of 20 requests"
            assert seen[-1] - burst_done["at"] < PROMPT
            release.set()
            assert future.result(timeout=10) == b"20"
    finally:
        client.close()
        server.stop(None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client_impl,server_impl",
                         [("dubbo", "dubbo"), ("dubbo", "grpcio"), ("grpcio", "dubbo")])
def test_ping_pong_never_waits_for_the_packing_timer(monkeypatch, serve_dubbo, grpc_channel,
                                                     client_impl, server_impl):
    # With the packing delay at 5 s, one held request or reply would stall a round trip
    # for 5 s: 300 round trips must still finish in a few seconds.
    import queue

    import dubbo.transport.messages

    monkeypatch.setattr(dubbo.transport.messages, "COALESCE_DELAY", 5.0)

    def echo(requests, context=None):
        yield from requests

    grpc_server = None
    if server_impl == "dubbo":
        port = serve_dubbo(SERVICE, RpcMethodHandler.bi_stream(echo, "echo")).port
    else:
        grpc_server = grpc.server(ThreadPoolExecutor(4))
        grpc_server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            SERVICE, {"echo": grpc.stream_stream_rpc_method_handler(echo)})])
        port = grpc_server.add_insecure_port("127.0.0.1:0")
        grpc_server.start()
    client = None
    requests: queue.SimpleQueue = queue.SimpleQueue()
    try:
        if client_impl == "dubbo":
            client = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"))
            replies = client.bidi_stream("echo")(iter(requests.get, None), timeout=50)
        else:
            stub = grpc_channel(port).stream_stream(f"/{SERVICE}/echo")
            replies = stub(iter(requests.get, None), timeout=50)
        started = time.monotonic()
        for i in range(300):
            requests.put(b"%d" % i)
            assert next(replies) == b"%d" % i
        assert time.monotonic() - started < 4.0
        requests.put(None)
        assert list(replies) == []
    finally:
        if client is not None:
            client.close()
        if grpc_server is not None:
            grpc_server.stop(None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["client_stream", "server_stream"])
def test_a_fast_producer_shares_data_frames(monkeypatch, serve_dubbo, direction):
    # The point of packing: thousands of small messages from a generator that never
    # waits travel in far fewer DATA frames than messages, on both sides.
    import h2.events

    import dubbo.client.client
    import dubbo.server.server

    frames = {"client_stream": 0, "server_stream": 0}

    def counting(cls, key):
        original = cls.handle_events

        def handle_events(self, events):
            frames[key] += sum(isinstance(e, h2.events.DataReceived) for e in events)
            return original(self, events)

        monkeypatch.setattr(cls, "handle_events", handle_events)

    counting(dubbo.server.server.ServerConnection, "client_stream")  # requests arrive here
    counting(dubbo.client.client.ClientConnection, "server_stream")  # replies arrive here
    count = 5000

    def total(requests):
        return b"%d" % sum(1 for _ in requests)

    def many(request):
        for _ in range(count):
            yield b"m" * 100

    server = serve_dubbo(SERVICE, RpcMethodHandler.client_stream(total, "total"),
                         RpcMethodHandler.server_stream(many, "many"))
    with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}")) \
            as client:
        if direction == "client_stream":
            assert client.client_stream("total")((b"r" * 100 for _ in range(count)),
                                                 timeout=30) == b"%d" % count
        else:
            assert sum(1 for _ in client.server_stream("many")(b"", timeout=30)) == count
    assert frames[direction] < count / 10, f"{frames[direction]} DATA frames for {count} messages"
