"""The client's per-call fast path: a small request's body leaves with its HEADERS
(``push_first_data``) unless the peer's window or our frame size says otherwise, and a
unary caller is woken once, after the reply, the status and the stream's release.
Driven over a socketpair against a plain h2 server, and end to end on a real server."""

from __future__ import annotations

import socket
import threading

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.transport.connection import INLINE_DATA_MAX, H2Transport
from dubbo.transport.ioloop import IOLoop

_HEADERS = [(":method", "POST"), (":path", "/x"), (":scheme", "http"), (":authority", "x")]


class _Transport(H2Transport):
    def handle_events(self, events):
        pass

    def connection_lost(self, error):
        pass


def _pair(initial_window: int | None = None):
    """A client transport (no loop running: the test reads) and its plain h2 peer."""
    ours, theirs = socket.socketpair()
    loop = IOLoop("dubbo-test-loop")
    transport = _Transport(ours, client_side=True, loop=loop)
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    peer.initiate_connection()
    if initial_window is not None:
        peer.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
    transport._receive(peer.data_to_send())
    transport.flush()
    peer.receive_data(theirs.recv(65536))
    transport._receive(peer.data_to_send())  # the SETTINGS ack, if any

    def close() -> None:
        transport.close()
        loop.stop()
        theirs.close()
        ours.close()

    return transport, peer, theirs, close


def _events(peer, sock) -> list:
    return peer.receive_data(sock.recv(1 << 20))


@pytest.mark.timeout(30)
def test_a_small_body_leaves_with_its_headers_in_one_flush():
    transport, peer, theirs, close = _pair()
    try:
        with transport.lock:
            stream_id = transport.start_stream(_HEADERS)
            assert transport.push_first_data(stream_id, b"\0\0\0\0\x03abc")
        transport.flush()
        kinds = [type(e) for e in _events(peer, theirs)]
        assert kinds.count(h2.events.RequestReceived) == 1
        assert h2.events.DataReceived in kinds and h2.events.StreamEnded in kinds
    finally:
        close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size, window", [(100, 50), (INLINE_DATA_MAX + 1, None)])
def test_a_body_that_does_not_fit_now_is_left_to_send_data(size, window):
    """Over the stream's window, or over the inline bound: nothing is queued, and
    send_data still delivers the whole body (the window case once the peer opens it)."""
    transport, peer, theirs, close = _pair(initial_window=window)
    try:
        body = b"m" * size
        with transport.lock:
            stream_id = transport.start_stream(_HEADERS)
            assert not transport.push_first_data(stream_id, body)
        transport.flush()
        events = _events(peer, theirs)
        assert not [e for e in events if isinstance(e, h2.events.DataReceived)]
        if window is not None:
            peer.increment_flow_control_window(size, stream_id=stream_id)
            transport._receive(peer.data_to_send())
        transport.send_data(stream_id, body, True, None, lambda: None)
        received = b""
        ended = False
        for _ in range(50):  # bounded: a few reads carry it all
            for event in _events(peer, theirs):
                if isinstance(event, h2.events.DataReceived):
                    received += event.data
                ended = ended or isinstance(event, h2.events.StreamEnded)
            if ended:
                break
        assert received == body and ended
    finally:
        close()


@pytest.fixture
def echo_server():
    handler = RpcServiceHandler(service_name="test.Fast", method_handlers={
        "Echo": RpcMethodHandler.unary(lambda request, context=None: request, "Echo"),
        "Big": RpcMethodHandler.unary(lambda request, context=None: request * 3, "Big"),
        "Three": RpcMethodHandler.server_stream(
            lambda request, context=None: iter([request] * 3), "Three"),
    })
    server = dubbo.Server(ServiceConfig(handler, host="127.0.0.1", port=0)).start()
    try:
        yield server
    finally:
        server.stop(grace=1.0)


@pytest.mark.timeout(60)
def test_unary_calls_free_their_stream_before_the_caller_wakes(echo_server):
    """When the call returns its stream is already forgotten: the provider counts no
    active call and the connection holds no call (balancers, MAX_CONCURRENT_STREAMS)."""
    with dubbo.Client(ReferenceConfig.from_url(
            f"tri://127.0.0.1:{echo_server.port}/test.Fast")) as client:
        echo = client.unary("Echo")
        endpoint = client.providers()[0]
        for size in (1, 100, INLINE_DATA_MAX + 10):  # inline, and through send_data
            payload = b"p" * size
            for _ in range(20):
                assert echo(payload) == payload
                assert endpoint.active == 0
                assert not endpoint.connection().calls
        reply, call = client.unary("Big").with_call(b"ab", timeout=5)
        assert reply == b"ababab" and call.code() is dubbo.StatusCode.OK


@pytest.mark.timeout(60)
def test_many_threads_share_a_connection_through_the_fast_path(echo_server):
    with dubbo.Client(ReferenceConfig.from_url(
            f"tri://127.0.0.1:{echo_server.port}/test.Fast")) as client:
        echo = client.unary("Echo")
        errors: list[BaseException] = []

        def run(index: int) -> None:
            try:
                for n in range(50):
                    payload = f"{index}-{n}".encode()
                    assert echo(payload, timeout=10) == payload
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,), name=f"dubbo-test-{i}")
                   for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        assert client.providers()[0].active == 0


@pytest.mark.timeout(60)
def test_a_reply_the_deserializer_refuses_is_internal(echo_server):
    """Unary and streaming replies: the deserializer's exception becomes INTERNAL
    "Exception deserializing response", with the exception as its cause."""

    def refuse(data: bytes) -> bytes:
        if data == b"bad":
            raise ValueError("not this one")
        return data

    with dubbo.Client(ReferenceConfig.from_url(
            f"tri://127.0.0.1:{echo_server.port}/test.Fast")) as client:
        echo = client.unary("Echo", response_deserializer=refuse)
        assert echo(b"good") == b"good"
        with pytest.raises(dubbo.RpcError) as info:
            echo(b"bad")
        assert info.value.code is dubbo.StatusCode.INTERNAL
        assert "Exception deserializing response" in info.value.details
        assert isinstance(info.value.__cause__, ValueError)
        three = client.server_stream("Three", response_deserializer=refuse)
        assert list(three(b"ok")) == [b"ok"] * 3
        replies = three(b"bad")
        with pytest.raises(dubbo.RpcError) as info:
            next(replies)
        assert info.value.code is dubbo.StatusCode.INTERNAL
        assert "Exception deserializing response" in info.value.details
        assert isinstance(info.value.__cause__, ValueError)
        replies.cancel()


def test_the_clients_header_block_cache_is_bounded():
    """Header blocks are remembered per (path, provider, codec): a program calling
    ever new paths or providers keeps at most 256 blocks."""
    client = dubbo.Client(ReferenceConfig.from_url("tri://127.0.0.1:1/s.S"))
    try:
        most = 0
        for i in range(3 * 256):
            block = client.headers(f"/s.S/m{i}", None, None, None, "127.0.0.1:1")
            assert (":path", f"/s.S/m{i}") in block
            assert len(client._header_blocks) <= 256
            most = max(most, len(client._header_blocks))
        assert most == 256  # the bound was reached, then held
    finally:
        client.close()
