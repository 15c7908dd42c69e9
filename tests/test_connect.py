"""Setting a connection up: what the fast paths of a new connection keep true.

A new plaintext client connection starts its loop thread only once its first small
request is on its way (the thread's start-up overlaps the server's work); the server
reads a client preface it already saw when accepting, so its SETTINGS leave with the
ACK of the client's. Each test checks the behaviour users rely on around those paths:
the first call works, large first requests, failed first calls and closing still do.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

import dubbo
from dubbo.client.client import DEFER_LOOP_MAX_REQUEST
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.transport.ioloop import IOLoop

SERVICE = "test.Connect"


def _echo(request: bytes) -> bytes:
    return request


@pytest.fixture
def server() -> Any:
    srv = dubbo.Server(ServiceConfig(RpcServiceHandler(SERVICE, [
        RpcMethodHandler.unary(_echo, "Echo")]), host="127.0.0.1", port=0)).start()
    try:
        yield srv
    finally:
        srv.stop(grace=1)


def _client(port: int, **options: Any) -> dubbo.Client:
    return dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"),
                        **options)


def _record_loop_starts(monkeypatch: pytest.MonkeyPatch, client: dubbo.Client
                        ) -> list[int]:
    """For each client loop thread started, how many calls its connection had then."""
    seen: list[int] = []
    start = IOLoop.start

    def recording(loop: IOLoop) -> None:
        if loop._thread is None and loop.name == "dubbo-client-conn":
            calls = 0  # still being built: not the endpoint's connection yet
            for endpoint in client._endpoints.values():
                current = endpoint._current
                if current is not None and current.loop is loop:
                    calls = len(current.calls)
            seen.append(calls)
        start(loop)

    monkeypatch.setattr(IOLoop, "start", recording)
    return seen


def test_loop_thread_starts_once_the_first_request_is_out(server: Any,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    client = _client(server.port)
    try:
        seen = _record_loop_starts(monkeypatch, client)
        echo = client.unary("Echo")
        assert echo(b"first", timeout=5) == b"first"
        assert seen == [1]  # started after the call's stream was open and its request sent
        assert echo(b"second", timeout=5) == b"second"
        assert seen == [1]
    finally:
        client.close()


def test_large_first_request_starts_the_loop_before_sending(server: Any,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A first request larger than the initial windows needs the server's WINDOW_UPDATE
    (read by the loop) to go out: its loop is not deferred."""
    client = _client(server.port)
    try:
        seen = _record_loop_starts(monkeypatch, client)
        big = bytes(range(256)) * 1024  # 256 KiB, four times the initial window
        assert len(big) > DEFER_LOOP_MAX_REQUEST
        assert client.unary("Echo")(big, timeout=10) == big
        assert seen == [0]
    finally:
        client.close()


def test_first_call_failing_before_it_is_sent_leaves_a_working_connection(server: Any
                                                                          ) -> None:
    client = _client(server.port)
    try:
        echo = client.unary("Echo")
        with pytest.raises(dubbo.RpcError) as info:
            echo(b"late", timeout=0)
        assert info.value.code is dubbo.StatusCode.DEADLINE_EXCEEDED
        (endpoint,) = client._endpoints.values()
        connection = endpoint._current
        assert connection is not None
        # The loop reads the connection even though no request went out.
        assert connection.loop._thread is not None
        assert echo(b"next", timeout=5) == b"next"
    finally:
        started = time.monotonic()
        client.close()
    assert time.monotonic() - started < 2.0


def test_closing_a_connection_whose_loop_never_started(server: Any) -> None:
    client = _client(server.port)
    (endpoint,) = client._endpoints.values()
    connection = endpoint.connection(defer_loop=True)
    assert connection.loop._thread is None
    started = time.monotonic()
    client.close()  # closing asks the loop for work: it starts, terminates, stops
    assert time.monotonic() - started < 2.0
    assert connection.closed
    connection.join(2.0)
    assert connection._terminated


def test_deferred_loop_starts_on_first_work_and_stops_unstarted() -> None:
    loop = IOLoop("dubbo-test-loop")
    loop.start_later()
    loop.start_deferred()  # does nothing twice: already started below only once
    assert loop._thread is not None
    ran = threading.Event()
    loop.call_soon(ran.set)
    assert ran.wait(2.0)
    loop.stop()

    idle = IOLoop("dubbo-test-loop")
    idle.start_later()
    idle.stop()  # never needed: no thread, its selector and wake-up sockets closed
    assert idle._thread is None
    assert not idle.call_soon(lambda: None)

    lazy = IOLoop("dubbo-test-loop")
    lazy.start_later()
    done = threading.Event()
    assert lazy.call_soon(done.set)  # the first work starts the thread
    assert done.wait(2.0)
    lazy.stop()


def _grpc_request(stream_id: int, payload: bytes, port: int) -> tuple[list[Any], bytes]:
    headers = [(":method", "POST"), (":scheme", "http"), (":path", f"/{SERVICE}/Echo"),
               (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
               ("te", "trailers")]
    return headers, b"\0" + len(payload).to_bytes(4, "big") + payload


def test_request_sent_with_the_preface_is_answered(server: Any) -> None:
    """A client that writes its preface, SETTINGS, HEADERS and DATA at once (RFC 9113
    §3.4 lets it) is served from the server's first read of the connection."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers, body = _grpc_request(1, b"together", server.port)
    conn.send_headers(1, headers)
    conn.send_data(1, body, end_stream=True)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        events: list[Any] = []
        deadline = time.monotonic() + 5
        while not any(isinstance(e, h2.events.StreamEnded) for e in events):
            assert time.monotonic() < deadline
            data = sock.recv(65536)
            assert data, "connection closed before the reply"
            events += conn.receive_data(data)
            sock.sendall(conn.data_to_send())
    kinds = [type(e) for e in events]
    assert h2.events.RemoteSettingsChanged in kinds
    assert h2.events.SettingsAcknowledged in kinds
    replies = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert replies == body
    trailers = dict(next(e.headers for e in events if isinstance(e, h2.events.TrailersReceived)))
    assert trailers[b"grpc-status"] == b"0"
    with server._lock:
        assert all(c.ready for c in server._connections)  # the handshake timer is off


def test_slow_preface_still_served(server: Any) -> None:
    """The preface arriving after the accept (the sniffer's path) is read as before."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    preface = conn.data_to_send()
    headers, body = _grpc_request(1, b"slow", server.port)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        time.sleep(0.2)  # accepted, sniffed, nothing to read yet
        sock.sendall(preface[:10])
        time.sleep(0.1)
        sock.sendall(preface[10:])
        conn.send_headers(1, headers)
        conn.send_data(1, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        replies = b""
        ended = False
        deadline = time.monotonic() + 5
        while not ended:
            assert time.monotonic() < deadline
            data = sock.recv(65536)
            assert data
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    replies += event.data
                ended = ended or isinstance(event, h2.events.StreamEnded)
            sock.sendall(conn.data_to_send())
    assert replies == body


def test_reference_from_the_same_url_is_a_fresh_config_each_time() -> None:
    """from_url remembers its parse per URL: what it returns must still be the caller's
    own to change, and bad URLs must still be refused every time."""
    url = "tri://h1:1,h2:2/pkg.Svc?timeout=1500&group=g"
    first = ReferenceConfig.from_url(url)
    first.parameters["extra"] = "x"
    first.addresses.append(("h3", 3))
    first.timeout = 9.0
    second = ReferenceConfig.from_url(url)
    assert second.parameters == {"timeout": "1500", "group": "g"}
    assert second.addresses == [("h1", 1), ("h2", 2)]
    assert second.timeout == 1.5 and second.group == "g" and second.host == "h1"
    assert second.parameters is not first.parameters
    for _ in range(2):
        with pytest.raises(ValueError):
            ReferenceConfig.from_url("tri://h1:1/pkg.Svc?nonsense=1")


def test_loops_leave_no_descriptor_behind_and_wake_after_stop_is_harmless() -> None:
    """Each loop's waker (an eventfd on Linux) is closed with the loop; call_soon racing
    stop() never writes to a closed descriptor (it could be another file's by then)."""
    import os

    def fds() -> int:
        return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0

    def call_often(loop: IOLoop, hits: list[int]) -> None:
        for _ in range(20):
            loop.call_soon(lambda: hits.append(1))

    before = fds()
    for _ in range(50):
        loop = IOLoop("dubbo-test-loop")
        loop.start()
        callers = [threading.Thread(target=call_often, args=(loop, []))
                   for _ in range(3)]
        for caller in callers:
            caller.start()
        loop.stop()
        for caller in callers:
            caller.join(5)
        assert not loop.call_soon(lambda: None)
    assert fds() <= before


def test_close_returns_once_the_connection_thread_is_gone(server: Any) -> None:
    """A client made per connection must not leave its loop thread winding down beside
    the next one's set-up: close() returns after the thread ended."""
    for _ in range(5):
        client = _client(server.port)
        assert client.unary("Echo")(b"x", timeout=5) == b"x"
        (endpoint,) = client._endpoints.values()
        connection = endpoint._current
        assert connection is not None and connection.loop._thread is not None
        thread = connection.loop._thread
        client.close()
        assert not thread.is_alive()


def test_an_ip_address_is_not_looked_up(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """tri://127.0.0.1:port needs no getaddrinfo (which a client made per connection
    paid each time); names still go through it."""
    from dubbo.client import endpoint as endpoint_module

    looked_up: list[Any] = []
    real = socket.getaddrinfo

    def counting(*args: Any, **kwargs: Any) -> Any:
        looked_up.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(endpoint_module.socket, "getaddrinfo", counting)
    client = _client(server.port)
    try:
        assert client.unary("Echo")(b"ip", timeout=5) == b"ip"
    finally:
        client.close()
    assert looked_up == []
    by_name = dubbo.Client(ReferenceConfig.from_url(f"tri://localhost:{server.port}/{SERVICE}"))
    try:
        by_name.unary("Echo")(b"name", timeout=5)
    except dubbo.RpcError:
        pass  # localhost may resolve to ::1 first, where the server does not listen
    finally:
        by_name.close()
    assert looked_up and set(looked_up) == {"localhost"}
