"""Per-connection bounds (issue 7): each option hit by a test, sans-I/O where it can be.

The attack reproductions with memory and thread figures live in tests/hostile/; these
tests pin each bound's own behaviour and its option."""

from __future__ import annotations

import socket
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.transport.connection import MAX_FRAME_SIZE, new_h2_connection
from dubbo.transport.h2_internals import Connection
from dubbo.wire.limits import FloodGuard, FloodLimits, Rate, TokenBucket

SERVICE = "test.Limits"
PATH = f"/{SERVICE}"


# -- sans-I/O --------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_its_rate():
    bucket = TokenBucket(Rate(3, 10.0), now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.05)  # half a token back
    assert bucket.take(0.1)  # one token back
    assert bucket.take(10.0) and bucket.take(10.0) and bucket.take(10.0)
    assert not bucket.take(10.0)  # refills only up to the burst


def test_flood_guard_counts_each_kind_apart():
    guard = FloodGuard(FloodLimits(pings=Rate(2, 0.0), resets=Rate(1, 0.0)), now=0.0)
    assert guard.allow("pings", 0.0) and guard.allow("pings", 0.0)
    assert not guard.allow("pings", 0.0)
    assert guard.allow("resets", 0.0)
    assert not guard.allow("resets", 1.0)
    assert guard.allow("settings", 0.0)


def _server_h2(max_header_list_size: int = 64 * 1024) -> Connection:
    config = h2.config.H2Configuration(client_side=False, header_encoding=None)
    conn = new_h2_connection(config, max_header_list_size)
    conn.max_inbound_frame_size = MAX_FRAME_SIZE
    conn.incoming_buffer.max_frame_size = MAX_FRAME_SIZE
    conn.initiate_connection()
    conn.receive_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    return conn


def test_a_frame_declaring_more_than_max_frame_size_is_refused_on_its_header():
    conn = _server_h2()
    # 9 bytes declaring 16 MiB of DATA: refused before any payload is buffered.
    header = (16 * 1024 * 1024 - 1).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big")
    with pytest.raises(h2.exceptions.FrameTooLargeError):
        conn.receive_data(header)
    assert b"\x00\x00\x08\x07" in conn.data_to_send()  # a GOAWAY frame went out


def test_a_header_block_may_not_outgrow_the_header_list_size():
    conn = _server_h2(max_header_list_size=16 * 1024)
    first = HeadersFrame(1)
    first.data = b"\x00" * 8000
    more = ContinuationFrame(1)
    more.data = b"\x00" * 8000
    conn.receive_data(first.serialize())
    with pytest.raises(h2.exceptions.DenialOfServiceError):
        conn.receive_data(more.serialize() + more.serialize())
    out = conn.data_to_send()
    assert out[-4:] == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM.to_bytes(4, "big")


def test_empty_continuations_still_count_frames():
    conn = _server_h2()
    first = HeadersFrame(1)
    first.data = b""
    empty = ContinuationFrame(1)
    conn.receive_data(first.serialize())
    with pytest.raises(h2.exceptions.ProtocolError):
        conn.receive_data(empty.serialize() * 100)


# -- a raw HTTP/2 client for the live tests ----------------------------------------------


class RawClient:
    """An h2 client on a blocking socket, driven by the test."""

    def __init__(self, port: int, window: int = 65535, connect: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.events: list[h2.events.Event] = []
        if connect:
            self.conn.initiate_connection()
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
            self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(self, method: str, body: bytes = b"", end: bool = True,
                flush: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, [
            (":method", "POST"), (":scheme", "http"), (":path", f"{PATH}/{method}"),
            (":authority", "localhost"), ("content-type", "application/grpc"),
            ("te", "trailers")])
        self.conn.send_data(stream_id, len(body).to_bytes(5, "big") + body, end_stream=end)
        if flush:
            self.flush()
        return stream_id

    def read_until(self, predicate, timeout: float = 5.0) -> h2.events.Event | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if predicate(event):
                    return event
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                self.events.append(h2.events.ConnectionTerminated())
                continue
            try:
                self.events.extend(self.conn.receive_data(data))
                self.flush()
            except (h2.exceptions.ProtocolError, OSError):
                pass
        return next((e for e in self.events if predicate(e)), None)

    def close(self) -> None:
        self.sock.close()


def _closed(sock: socket.socket, timeout: float) -> bool:
    """True once the peer closed ``sock`` (it reads EOF or a reset) within ``timeout``."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def _serve(serve_options: dict, *handlers: RpcMethodHandler) -> dubbo.Server:
    service = RpcServiceHandler(SERVICE, list(handlers))
    return dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0),
                        **serve_options).start()


def _echo(request: bytes) -> bytes:
    return request


@pytest.fixture
def servers():
    started: list[dubbo.Server] = []

    def start(options: dict, *handlers: RpcMethodHandler) -> dubbo.Server:
        server = _serve(options, *handlers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(grace=0.5)


def _unary_works(port: int) -> bool:
    with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}")) as client:
        return client.unary("echo")(b"ping", timeout=2) == b"ping"


# -- connections -----------------------------------------------------------------------


def test_a_connection_without_a_handshake_is_closed_after_handshake_timeout(servers):
    server = servers({"handshake_timeout": 0.5}, RpcMethodHandler.unary(_echo, "echo"))
    silent = socket.create_connection(("127.0.0.1", server.port))
    try:
        started = time.monotonic()
        assert _closed(silent, 5.0)
        assert 0.4 < time.monotonic() - started < 3.0
    finally:
        silent.close()
    assert _unary_works(server.port)  # a client that does its handshake is kept


def test_connections_past_max_connections_are_closed_at_once(servers):
    server = servers({"max_connections": 2}, RpcMethodHandler.unary(_echo, "echo"))
    kept = [RawClient(server.port) for _ in range(2)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", server.port))
        try:
            assert _closed(extra, 2.0)
        finally:
            extra.close()
    finally:
        for client in kept:
            client.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the server notices the two closed
        try:
            if _unary_works(server.port):
                break
        except dubbo.RpcError:
            time.sleep(0.1)
    assert _unary_works(server.port)


def test_idle_connections_cost_no_thread(servers):
    server = servers({}, RpcMethodHandler.unary(_echo, "echo"))
    assert _unary_works(server.port)
    before = threading.active_count()
    clients = [RawClient(server.port) for _ in range(100)]
    try:
        for client in clients:
            assert client.read_until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        assert threading.active_count() <= before + 1
    finally:
        for client in clients:
            client.close()


# -- streams ---------------------------------------------------------------------------


def test_streams_over_max_concurrent_streams_are_refused_one_by_one(servers):
    release = threading.Event()

    def slow(request: bytes) -> bytes:
        release.wait(5)
        return request

    server = servers({"max_concurrent_streams": 2}, RpcMethodHandler.unary(slow, "slow"))
    client = RawClient(server.port)  # sends its streams before reading our SETTINGS
    try:
        ids = [client.request("slow", b"x") for _ in range(3)]
        refused = client.read_until(lambda e: isinstance(e, h2.events.StreamReset))
        assert refused is not None and refused.stream_id == ids[2]
        assert refused.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        release.set()
        for stream_id in ids[:2]:
            assert client.read_until(lambda e, s=stream_id: isinstance(
                e, h2.events.StreamEnded) and e.stream_id == s)
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events)
    finally:
        release.set()
        client.close()


@pytest.mark.parametrize("bad_headers", [
    [(":path", f"{PATH}/missing"), ("content-type", "application/grpc")],
    [(":path", f"{PATH}/echo"), ("content-type", "text/plain")],
    [(":path", f"{PATH}/echo"), ("content-type", "application/grpc"), ("grpc-timeout", "1x")],
])
def test_a_refused_request_reset_in_the_same_read_ends_only_its_stream(servers, bad_headers):
    server = servers({}, RpcMethodHandler.unary(_echo, "echo"))
    client = RawClient(server.port)
    try:
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream_id, [(":method", "POST"), (":scheme", "http"),
                                             (":authority", "x"), *bad_headers])
        client.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        good = client.conn.get_next_available_stream_id()
        client.conn.send_headers(good, [
            (":method", "POST"), (":scheme", "http"), (":path", f"{PATH}/echo"),
            (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers")])
        client.conn.send_data(good, b"\x00\x00\x00\x00\x02hi", end_stream=True)
        client.flush()  # all of it in one write
        ended = client.read_until(lambda e: isinstance(e, h2.events.StreamEnded)
                                  and e.stream_id == good)
        assert ended is not None
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events)
    finally:
        client.close()


def test_one_connection_takes_at_most_max_calls_per_connection(servers):
    release = threading.Event()

    def slow(request: bytes) -> bytes:
        release.wait(10)
        return request

    server = servers({"max_workers": 32, "max_calls_per_connection": 3},
                     RpcMethodHandler.unary(slow, "slow"), RpcMethodHandler.unary(_echo, "echo"))
    client = RawClient(server.port)
    try:
        ids = [client.request("slow", b"x") for _ in range(4)]
        answer = client.read_until(lambda e: isinstance(e, h2.events.ResponseReceived)
                                   and e.stream_id == ids[3])
        assert answer is not None
        assert (b"grpc-status", b"8") in answer.headers  # RESOURCE_EXHAUSTED
        assert _unary_works(server.port)  # another connection is served meanwhile
    finally:
        release.set()
        client.close()


def test_a_peer_that_reads_nothing_loses_its_stream_after_send_timeout(servers):
    ended = threading.Event()

    def forever(request: bytes, context):
        context.add_callback(ended.set)
        while context.is_active():
            yield b"x" * 1024

    server = servers({"send_timeout": 0.5},
                     RpcMethodHandler.server_stream(forever, "forever"),
                     RpcMethodHandler.unary(_echo, "echo"))
    client = RawClient(server.port, window=0)
    try:
        stream_id = client.request("forever", b"")
        started = time.monotonic()
        status = client.read_until(lambda e: isinstance(e, h2.events.TrailersReceived)
                                   and e.stream_id == stream_id, timeout=5)
        assert status is not None and (b"grpc-status", b"1") in status.headers  # CANCELLED
        assert 0.4 < time.monotonic() - started < 3
        assert ended.wait(2)  # the handler ended: its worker is free
        assert _unary_works(server.port)
    finally:
        client.close()


# -- floods ----------------------------------------------------------------------------


def test_a_ping_flood_is_answered_with_enhance_your_calm(servers):
    server = servers({"flood_limits": FloodLimits(pings=Rate(50, 1.0))},
                     RpcMethodHandler.unary(_echo, "echo"))
    client = RawClient(server.port)
    try:
        for i in range(200):
            client.conn.ping(i.to_bytes(8, "big"))
        _assert_told_to_calm_down(client)
        assert _unary_works(server.port)
    finally:
        client.close()


def test_rapid_reset_is_answered_with_enhance_your_calm(servers):
    server = servers({"flood_limits": FloodLimits(resets=Rate(20, 1.0))},
                     RpcMethodHandler.unary(_echo, "echo"))
    client = RawClient(server.port)
    try:
        for _ in range(50):  # one write: the server reads the attack whole
            stream_id = client.request("echo", b"x", end=False, flush=False)
            client.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        _assert_told_to_calm_down(client)
        assert _unary_works(server.port)
    finally:
        client.close()


def _assert_told_to_calm_down(client: RawClient) -> None:
    """Send what the client queued in one write; the server must answer GOAWAY
    ENHANCE_YOUR_CALM."""
    client.flush()
    goaway = client.read_until(lambda e: isinstance(e, h2.events.ConnectionTerminated))
    assert goaway is not None
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_a_peer_that_does_not_read_its_ping_acks_is_dropped_past_max_send_buffer(servers):
    server = servers({"max_send_buffer": 256 * 1024,
                      "flood_limits": FloodLimits(pings=Rate(10**9, 10**9))},
                     RpcMethodHandler.unary(_echo, "echo"))
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        config = h2.config.H2Configuration(client_side=True)
        conn = h2.connection.H2Connection(config=config)
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        sock.settimeout(10)
        pings = b"".join(_ping_frame(i) for i in range(20_000))
        dropped = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # at most ~ 20 s of 340 KB writes
            try:
                sock.sendall(pings)
            except OSError:  # reset: the server gave up on us
                dropped = True
                break
        assert dropped
        assert _unary_works(server.port)
    finally:
        sock.close()


def _ping_frame(i: int) -> bytes:
    return b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + i.to_bytes(8, "big")


def test_callbacks_of_many_cancelled_calls_run_on_a_few_threads(servers):
    release = threading.Event()
    ran = []
    lock = threading.Lock()
    peak = [0]

    def callback() -> None:
        with lock:
            ran.append(1)
            peak[0] = max(peak[0], sum(t.name.startswith("dubbo-callbacks")
                                       for t in threading.enumerate()))
        release.wait(0.05)

    def hold(request: bytes, context) -> bytes:
        context.add_callback(callback)
        release.wait(10)
        return request

    server = servers({"max_workers": 64, "max_calls_per_connection": 64},
                     RpcMethodHandler.unary(hold, "hold"))
    client = RawClient(server.port)
    try:
        ids = [client.request("hold", b"x") for _ in range(60)]
        time.sleep(0.5)  # the handlers are running
        for stream_id in ids:
            client.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        client.flush()
        deadline = time.monotonic() + 10
        while len(ran) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(ran) == 60  # every callback ran once
        assert peak[0] <= 4  # on the callback pool, not a thread per call
    finally:
        release.set()
        client.close()
