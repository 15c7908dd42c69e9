"""The server's per-call shortcuts (issue 11) keep every call's own answer: a request
head remembered by its connection (bounded, as the peer chooses what it holds), calls
handed to workers once their read is handled, the one-lock unary reply."""

from __future__ import annotations

import time

import pytest
from memory_pair import memory_pair

from dubbo.proxy.handlers import RpcMethodHandler
from dubbo.server import server as server_module
from dubbo.status import StatusCode


def _metadata_of(request: bytes, context) -> bytes:
    left = context.time_remaining()
    pairs = [f"{k}={v}" for k, v in context.invocation_metadata() if k.startswith("x-")]
    return f"{';'.join(pairs)}|{'none' if left is None else 'deadline'}".encode()


@pytest.mark.timeout(30)
def test_a_remembered_head_still_gives_each_call_its_own_metadata_and_deadline():
    with memory_pair(RpcMethodHandler.unary(_metadata_of, "meta")) as pair:
        call = pair.client.unary("meta")
        for _ in range(3):  # the same head three times: parsed once, answered each time
            assert call(b"", metadata=[("x-a", "1")]) == b"x-a=1|none"
        assert call(b"", metadata=[("x-a", "2")]) == b"x-a=2|none"
        assert call(b"", metadata=[("x-a", "1")]) == b"x-a=1|none"
        # A head with grpc-timeout is never remembered: every call has its own deadline.
        assert call(b"", timeout=5, metadata=[("x-a", "1")]) == b"x-a=1|deadline"
        assert call(b"", timeout=5, metadata=[("x-a", "1")]) == b"x-a=1|deadline"
        (connection,) = pair.server_connections()
        assert len(connection._known) == 2  # x-a=1 and x-a=2, no timed head


@pytest.mark.timeout(60)
def test_remembered_heads_are_bounded_in_count_and_bytes():
    with memory_pair(RpcMethodHandler.unary(lambda r: r, "echo")) as pair:
        call = pair.client.unary("echo")
        assert call(b"x") == b"x"  # the server takes the connection on its loop thread
        (connection,) = pair.server_connections()
        for i in range(3 * server_module._KNOWN_ENTRIES):  # a new head every call
            assert call(b"x", metadata=[("x-n", str(i))]) == b"x"
            assert len(connection._known) <= server_module._KNOWN_ENTRIES
        assert connection._known_bytes <= server_module._KNOWN_BYTES
        # A block over the per-block bound is answered but never kept.
        connection._known.clear()
        connection._known_bytes = 0
        big = "v" * (server_module._KNOWN_BLOCK_BYTES + 1)
        assert call(b"y", metadata=[("x-big", big)]) == b"y"
        assert connection._known == {} and connection._known_bytes == 0
        # Many mid-size heads: the byte bound empties the table before it is passed.
        mid = "m" * (server_module._KNOWN_BLOCK_BYTES - 600)
        for i in range(3 * server_module._KNOWN_BYTES // server_module._KNOWN_BLOCK_BYTES):
            assert call(b"z", metadata=[("x-mid", f"{i}{mid}")]) == b"z"
            assert connection._known_bytes <= server_module._KNOWN_BYTES


@pytest.mark.timeout(30)
def test_the_stopping_server_refuses_a_remembered_head():
    with memory_pair(RpcMethodHandler.unary(lambda r: r, "echo")) as pair:
        call = pair.client.unary("echo")
        assert call(b"a") == b"a"
        (connection,) = pair.server_connections()
        assert len(connection._known) == 1
        pair.server.stopping = True  # what stop() sets first; the head is known
        try:
            with pytest.raises(Exception) as info:
                call(b"b", timeout=5)
            assert getattr(info.value, "code", None) is StatusCode.UNAVAILABLE
        finally:
            pair.server.stopping = False


@pytest.mark.timeout(30)
def test_a_unary_reply_larger_than_a_frame_still_goes_out_whole():
    # Over the 16 KiB frame size: the one-lock reply does not apply, send_data does.
    with memory_pair(RpcMethodHandler.unary(lambda r: r * 8, "grow")) as pair:
        request = bytes(range(256)) * 32  # 8 KiB
        assert pair.client.unary("grow")(request, timeout=10) == request * 8


@pytest.mark.timeout(30)
def test_a_stream_of_requests_reaches_the_handler_in_order_across_reads():
    def count(requests):
        seen = [int(r) for r in requests]
        assert seen == list(range(len(seen)))
        return str(len(seen)).encode()

    with memory_pair(RpcMethodHandler.client_stream(count, "count")) as pair:
        started = time.monotonic()
        assert pair.client.client_stream("count")(
            (str(i).encode() for i in range(500)), timeout=20) == b"500"
        assert time.monotonic() - started < 20


@pytest.mark.timeout(30)
def test_a_call_whose_status_was_sent_no_longer_fills_a_bounded_server():
    """One worker, no waiting room: the client's next call, started as soon as the last
    one's status arrived, is served even while the last one's worker still runs its
    done-callbacks (it used to be refused RESOURCE_EXHAUSTED until they ended)."""
    slow_callbacks = []

    def echo(request, context):
        context.add_callback(lambda: time.sleep(0.3))
        slow_callbacks.append(time.monotonic())
        return request

    options = {"max_workers": 1, "max_pending_calls": 0}
    with memory_pair(RpcMethodHandler.unary(echo, "echo"), server_options=options) as pair:
        call = pair.client.unary("echo")
        started = time.monotonic()
        assert [call(b"%d" % i, timeout=10) for i in range(3)] == [b"0", b"1", b"2"]
        # Each call waited for the one worker to come back, none was refused.
        assert time.monotonic() - started >= 0.55
        assert len(slow_callbacks) == 3
