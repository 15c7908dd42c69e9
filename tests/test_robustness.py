"""Failure modes found in review: each of these once hung a connection, lost a status
or stranded a message. They stay fixed."""

from __future__ import annotations

import os
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import pytest

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.transport import MessageWriter
from dubbo.transport.timer import Scheduler
from dubbo.wire.framing import encode_message

SERVICE = "test.Robust"


def _client(port: int, **options) -> dubbo.Client:
    return dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"),
                        **options)


@pytest.mark.timeout(60)
def test_handlers_that_stop_reading_do_not_shrink_the_connection_window(serve_dubbo):
    # A handler that answers after one request leaves the rest unread. Credit held back
    # for them is owed on the whole connection; once it leaked, after two such calls
    # every upload on the connection hung.
    def first(requests):
        request = next(requests)
        time.sleep(0.2)  # let the client's requests pile up, then answer early
        return request[:4]

    def echo(request):
        return request

    server = serve_dubbo(SERVICE, RpcMethodHandler.client_stream(first),
                         RpcMethodHandler.unary(echo))
    chunk = os.urandom(1024 * 1024)
    with _client(server.port) as client:
        for _ in range(5):
            assert client.client_stream("first")((chunk for _ in range(50)),
                                                 timeout=20) == chunk[:4]
            assert client.unary("echo")(b"x" * 300_000, timeout=5) == b"x" * 300_000


@pytest.mark.timeout(60)
def test_large_transfers_both_ways_do_not_deadlock_the_readers(serve_dubbo):
    # Four bidi streams each push 40 MiB both ways while the client reads nothing for
    # a second: both sockets fill. A reader thread that waited on a write then could
    # never read again, and two such readers deadlocked the connection.
    def echo(requests):
        yield from requests

    message = os.urandom(1024 * 1024)
    limits = {"max_receive_message_size": None, "max_send_message_size": None}
    server = serve_dubbo(SERVICE, RpcMethodHandler.bi_stream(echo))
    server.max_receive_message_size = server.max_send_message_size = None
    results: list[object] = []
    with _client(server.port, **limits) as client:
        def one() -> None:
            replies = client.bidi_stream("echo")((message for _ in range(40)), timeout=40)
            time.sleep(1)
            try:
                results.append(sum(1 for _ in replies))
            except dubbo.RpcError as exc:
                results.append(exc.code.name)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(45)
    assert results == [40, 40, 40, 40]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method,size,code", [
    ("echo", 5 * 1024 * 1024, dubbo.StatusCode.RESOURCE_EXHAUSTED),
    ("noSuchMethod", 3 * 1024 * 1024, dubbo.StatusCode.UNIMPLEMENTED),
])
def test_a_request_answered_before_it_was_all_sent_reports_the_servers_status(
        serve_dubbo, method, size, code):
    def echo(request):
        return request

    server = serve_dubbo(SERVICE, RpcMethodHandler.unary(echo))
    with _client(server.port, max_send_message_size=None) as client:
        with pytest.raises(dubbo.RpcError) as info:
            client.unary(method)(b"z" * size, timeout=10)
        assert info.value.code is code, info.value
        assert client.unary("echo")(b"ok", timeout=5) == b"ok"  # the connection is fine


class _TruncatingServer:
    """Answers every call with 3 bytes of a 10-byte message, then grpc-status 0."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, name="truncating-server",
                                       daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        sock, _ = self.listener.accept()
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        with sock:
            sock.sendall(conn.data_to_send())
            while data := sock.recv(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        sid = event.stream_id
                        conn.send_headers(sid, [(":status", "200"),
                                                ("content-type", "application/grpc")])
                        conn.send_data(sid, encode_message(b"0123456789")[:8])
                        conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
                sock.sendall(conn.data_to_send())

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.mark.timeout(30)
def test_a_truncated_reply_with_ok_trailers_is_internal_not_ok():
    server = _TruncatingServer()
    try:
        with _client(server.port) as client:
            with pytest.raises(dubbo.RpcError) as info:
                client.unary("any")(b"", timeout=5)
        assert info.value.code is dubbo.StatusCode.INTERNAL
    finally:
        server.close()


def test_a_message_added_while_the_packing_timer_fires_is_not_stranded():
    # The timer fires while the producer holds the writer's lock after adding a
    # message: the timer must look again, not forget the waiting messages.
    sent: list[bytes] = []

    class Transport:
        def send_data(self, stream_id, data, end_stream, deadline, error, trailers=None,
                      block=True):
            sent.append(data if isinstance(data, bytes) else b"".join(data))

    scheduler = Scheduler("test-timer")
    try:
        writer = MessageWriter(Transport(), 1, None, lambda: None, scheduler)
        writer.write(b"first", coalesce=True)  # arms the timer
        with writer._lock:  # the producer's second write(), interleaved with the timer
            writer._pending.append(b"second")
            time.sleep(0.05)
        deadline = time.monotonic() + 2
        while not sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sent == [b"firstsecond"]
    finally:
        scheduler.close()


def test_an_unknown_compression_is_refused_when_the_server_is_made():
    service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(lambda r: r, "echo")])
    with pytest.raises(ValueError, match="unsupported compression 'snappy'"):
        dubbo.Server(ServiceConfig(service, port=0), compression="snappy")
