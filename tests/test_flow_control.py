"""Flow control and cancellation as users meet them: a slow side slows its peer (memory
stays bounded, nothing is lost), and a cancelled or vanished peer frees the worker."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "test.Flow"
CHUNK = 100 * 1024
COUNT = 1000  # 100 MiB if nothing pushed back
# Our stream window (8 MiB) + held-back buffer (1 MiB) + loopback socket buffers.
BOUND = 32 * 1024 * 1024
# grpcio's client grows its window by BDP estimation and reads ahead of the
# application into its own buffers: 4 to 28 MiB measured here. Still far below the
# 100 MiB that would go out if nothing pushed back.
GRPCIO_READER_BOUND = 64 * 1024 * 1024


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.n += 1


@pytest.fixture
def server_factory(serve_dubbo):
    return lambda handlers: serve_dubbo(SERVICE, *handlers)


@pytest.fixture
def client_factory():
    clients = []

    def make(port, impl="dubbo"):
        if impl == "grpcio":
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            clients.append(channel)
            return channel
        client = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _client_stream(client, impl):
    if impl == "grpcio":
        return client.stream_unary(f"/{SERVICE}/slowReader")
    return client.client_stream("slowReader")


def _server_stream(client, impl, method):
    if impl == "grpcio":
        return client.unary_stream(f"/{SERVICE}/{method}")
    return client.server_stream(method)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", ["dubbo", "grpcio"])
def test_slow_handler_pushes_back_on_client(server_factory, client_factory, impl):
    release = threading.Event()
    produced = Counter()

    def slow_reader(requests):
        total = 0
        for i, request in enumerate(requests):
            if i == 0:
                release.wait(20)
            assert len(request) == CHUNK
            total += 1
        return str(total).encode()

    server = server_factory([RpcMethodHandler.client_stream(slow_reader, "slowReader")])
    client = client_factory(server.port, impl)

    def requests():
        for _ in range(COUNT):
            produced.add()
            yield b"x" * CHUNK

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(_client_stream(client, impl), requests(), timeout=50)
        time.sleep(1.5)
        sent_while_stalled = produced.n * CHUNK
        release.set()
        result = future.result(timeout=50)
    assert sent_while_stalled < BOUND, f"{sent_while_stalled} bytes went out to a stalled handler"
    assert result == str(COUNT).encode()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", ["dubbo", "grpcio"])
def test_slow_client_pushes_back_on_handler(server_factory, client_factory, impl):
    produced = Counter()

    def firehose(request):
        for i in range(COUNT):
            produced.add()
            yield i.to_bytes(4, "big") + b"y" * (CHUNK - 4)

    server = server_factory([RpcMethodHandler.server_stream(firehose, "firehose")])
    client = client_factory(server.port, impl)
    replies = _server_stream(client, impl, "firehose")(b"", timeout=50)
    first = next(replies)
    time.sleep(1.5)
    bound = GRPCIO_READER_BOUND if impl == "grpcio" else BOUND
    assert produced.n * CHUNK < bound, "handler was not slowed by a client that does not read"
    rest = list(replies)
    numbers = [int.from_bytes(m[:4], "big") for m in [first] + rest]
    assert numbers == list(range(COUNT))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("impl", ["dubbo", "grpcio"])
def test_cancel_frees_handler_blocked_on_closed_window(server_factory, client_factory, impl):
    ended = threading.Event()
    finalized = threading.Event()
    inactive = []

    def endless(request, context):
        context.add_callback(ended.set)
        try:
            while True:
                yield b"z" * CHUNK
        finally:
            inactive.append(context.is_active())
            finalized.set()

    server = server_factory([RpcMethodHandler.server_stream(endless, "endless")])
    client = client_factory(server.port, impl)
    replies = _server_stream(client, impl, "endless")(b"")
    next(replies)
    time.sleep(0.5)  # let the handler fill the window and block in yield
    started = time.monotonic()
    replies.cancel()
    assert ended.wait(2), "add_callback did not run after the client cancelled"
    assert finalized.wait(2), "handler generator was not closed after cancellation"
    assert time.monotonic() - started < 2
    assert inactive == [False]


@pytest.mark.timeout(30)
def test_dropped_response_iterator_cancels_the_call(server_factory, client_factory):
    finalized = threading.Event()

    def endless(request):
        try:
            while True:
                yield b"z" * 1000
        finally:
            finalized.set()

    server = server_factory([RpcMethodHandler.server_stream(endless, "endless")])
    client = client_factory(server.port)
    replies = client.server_stream("endless")(b"")
    next(replies)
    del replies
    assert finalized.wait(2), "dropping the iterator did not cancel the server's handler"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("impl", ["dubbo", "grpcio"])
def test_client_disconnect_ends_request_iterator(server_factory, client_factory, impl):
    seen = {}
    done = threading.Event()

    def waiter(requests, context):
        try:
            for _ in requests:
                pass
            seen["ended"] = "normally"
        except dubbo.RpcError as exc:
            seen["ended"] = exc.code
        seen["active"] = context.is_active()
        done.set()
        return b""

    server = server_factory([RpcMethodHandler.client_stream(waiter, "slowReader")])
    client = client_factory(server.port, impl)
    gate = threading.Event()

    def requests():
        yield b"one"
        gate.wait(10)

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(_client_stream(client, impl), requests())
        time.sleep(0.5)
        started = time.monotonic()
        client.close()
        assert done.wait(2), "handler still waiting for requests after the client left"
        assert time.monotonic() - started < 1.5
        gate.set()
        with pytest.raises((dubbo.RpcError, grpc.RpcError)):
            future.result(timeout=5)
    assert seen == {"ended": dubbo.StatusCode.CANCELLED, "active": False} or \
        seen == {"ended": dubbo.StatusCode.UNAVAILABLE, "active": False}


@pytest.mark.timeout(30)
def test_client_reconnects_after_server_restart(client_factory):
    def echo(request):
        return request

    service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(echo)])
    first = dubbo.Server(ServiceConfig(service, port=0)).start()
    port = first.port
    client = client_factory(port)
    assert client.unary("echo")(b"a") == b"a"
    first.stop(grace=0)
    with pytest.raises(dubbo.RpcError) as info:
        client.unary("echo")(b"b")
    assert info.value.code is dubbo.StatusCode.UNAVAILABLE
    second = dubbo.Server(ServiceConfig(service, port=port)).start()
    try:
        # The failed reconnect started a backoff (0.1 s +-20 %): calls fail fast in it...
        with pytest.raises(dubbo.RpcError) as info:
            client.unary("echo")(b"c")
        assert info.value.code is dubbo.StatusCode.UNAVAILABLE
        assert "next attempt in" in info.value.details
        time.sleep(0.15)
        # ...and the first call after it reconnects.
        assert client.unary("echo")(b"c") == b"c"
    finally:
        second.stop(grace=0)


@pytest.mark.timeout(30)
def test_stop_lets_in_flight_call_finish_and_refuses_new_connections(client_factory):
    entered = threading.Event()

    def slow(request):
        entered.set()
        time.sleep(0.5)
        return b"done:" + request

    service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(slow)])
    server = dubbo.Server(ServiceConfig(service, port=0)).start()
    client = client_factory(server.port)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(client.unary("slow"), b"x")
        assert entered.wait(5)
        server.stop(grace=5)
        assert future.result(timeout=5) == b"done:x"
    other = client_factory(server.port)
    with pytest.raises(dubbo.RpcError) as info:
        other.unary("slow")(b"y", timeout=2)
    assert info.value.code is dubbo.StatusCode.UNAVAILABLE
