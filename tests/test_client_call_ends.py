"""How a real client call ends against a raw HTTP/2 server, where the state machine
(tests/test_client_stream.py) meets the socket: an answer with two messages, a
GOAWAY that leaves the stream unprocessed."""

from __future__ import annotations

import pytest
from test_call_semantics import RawH2Server, grpc_frame

import dubbo
from dubbo.configs import ReferenceConfig
from dubbo.status import UnavailableError

SERVICE = "test.Ends"
HEAD = [(":status", "200"), ("content-type", "application/grpc")]


def _client(port: int) -> dubbo.Client:
    return dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"))


@pytest.mark.timeout(20)
def test_a_unary_reply_with_two_messages_is_unimplemented():
    # The reply and its trailers arrive in one read: the call is over when the
    # second message is seen, so failing it is a no-op in the state machine, and
    # the caller must still get the error (it once got a TypeError: raise None).
    def respond(conn, stream_id, headers):
        conn.send_headers(stream_id, HEAD)
        conn.send_data(stream_id, grpc_frame(b"one") + grpc_frame(b"two"))
        conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)

    server = RawH2Server(respond)
    client = _client(server.port)
    try:
        with pytest.raises(dubbo.RpcError) as info:
            client.unary("twice")(b"x", timeout=5)
    finally:
        client.close()
        server.close()
    assert info.value.code is dubbo.StatusCode.UNIMPLEMENTED, info.value
    assert "more than one" in info.value.details


@pytest.mark.timeout(20)
def test_a_stream_refused_by_goaway_is_tried_again_as_not_sent():
    # GOAWAY with last stream id 0: the server processed nothing, so failover may
    # try the call again (here on the same, only, provider: a new connection each
    # time, the old one drains), then reports UNAVAILABLE.
    def respond(conn, stream_id, headers):
        conn.close_connection(last_stream_id=0)

    server = RawH2Server(respond)
    client = _client(server.port)
    try:
        with pytest.raises(dubbo.RpcError) as info:
            client.unary("refused")(b"x", timeout=5)
    finally:
        client.close()
        server.close()
    assert info.value.code is dubbo.StatusCode.UNAVAILABLE, info.value
    assert "GOAWAY" in info.value.details
    assert isinstance(info.value, UnavailableError)
    assert len(server.requests) == 3  # failover: the first try and 2 retries
