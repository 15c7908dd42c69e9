"""Misbehaving servers for the client attack tests (test_client_attacks.py).

Each server is a raw listening socket on 127.0.0.1 (port 0) whose connections are
served by threads of the test process, speaking HTTP/2 through h2 where the attack
needs it and raw bytes where it does not. ``close()`` (or leaving the ``with`` block)
stops every thread and closes every socket the server opened, so the autouse leak
check in tests/conftest.py sees nothing left behind. Close the server *before* the
client under test: a client blocked on a server that never answers is freed when the
server's sockets close.
"""

from __future__ import annotations

import gzip
import re
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from dubbo.wire.framing import encode_message

Headers = list[tuple[bytes, bytes]]

POLL = 0.05  # seconds a blocked server thread waits before it looks at ``stopping``
BIG_WINDOW = 2**31 - 1  # a window that never stops a client from sending


# --------------------------------------------------------------------------- process


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    assert match is not None, f"no {field} in /proc/self/status"
    return int(match.group(1))


def rss_bytes() -> int:
    """This process's resident set size now."""
    return _status_kib("VmRSS") * 1024


def reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS counter (VmHWM) from the current RSS, so
    ``peak_rss_bytes`` measures one test, not the whole session."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_rss_bytes() -> int:
    """The highest resident set size since the last ``reset_peak_rss``."""
    return _status_kib("VmHWM") * 1024


# --------------------------------------------------------------------------- servers


class EvilServer:
    """Accepts connections on 127.0.0.1 and runs ``handle(server, sock)`` for each on
    a thread of its own. ``_lock`` guards ``_sockets``, ``_threads``, ``_marks`` and
    ``accepted``."""

    def __init__(self, handle: Callable[[EvilServer, socket.socket], None], *,
                 name: str = "evil-server", rcvbuf: int | None = None) -> None:
        self.handle = handle
        self.name = name
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._marks: dict[str, threading.Event] = {}
        self.accepted = 0
        self.heads: list[dict[bytes, bytes]] = []  # request heads a handler chose to keep
        self.errors: list[BaseException] = []  # unexpected failures in our own handlers
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before listen(): accepted sockets inherit it, and it caps the window
            # TCP offers the client, so a server that stops reading stalls it soon.
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(POLL)
        self.port: int = self.listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name=f"{name}-accept", daemon=True)
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self.stopping.is_set():
                    sock.close()
                    return
                self.accepted += 1
                self._sockets.append(sock)
                thread = threading.Thread(target=self._serve, args=(sock,),
                                          name=f"{self.name}-{self.accepted}", daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self.handle(self, sock)
        except (OSError, h2.exceptions.ProtocolError):
            pass  # the client went away or broke the protocol: that is its business
        except BaseException as exc:  # a bug in the test's server: report it
            self.errors.append(exc)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def event(self, name: str) -> threading.Event:
        """A named event a handler sets to tell the test how far the attack got."""
        with self._lock:
            return self._marks.setdefault(name, threading.Event())

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the server is stopping."""
        return self.stopping.wait(seconds)

    def close(self) -> None:
        """Stop accepting, free every blocked handler and close every socket."""
        self.stopping.set()
        self._accept_thread.join(5)
        self.listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked in recv/send
            except OSError:
                pass
        for thread in threads:
            thread.join(5)
        for sock in sockets:
            sock.close()
        stuck = [t.name for t in threads if t.is_alive()]
        assert not stuck, f"evil server threads did not stop: {stuck}"
        assert not self.errors, f"evil server handler failed: {self.errors!r}"

    def __enter__(self) -> EvilServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def recv_some(server: EvilServer, sock: socket.socket, size: int = 65536) -> bytes:
    """The next bytes from the client; b"" once it closed or the server stops."""
    sock.settimeout(POLL)
    while not server.stopping.is_set():
        try:
            return sock.recv(size)
        except TimeoutError:
            continue
    return b""


class H2ServerSide:
    """The server end of one HTTP/2 connection, driven by the handler's thread.

    Header validation is off both ways, so a handler can send heads no real server
    would (that is the point)."""

    def __init__(self, server: EvilServer, sock: socket.socket, *,
                 window: int | None = None) -> None:
        self.server = server
        self.sock = sock
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
            validate_inbound_headers=False, normalize_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=config)
        if window is not None:
            self.conn.local_settings = h2.settings.Settings(
                client=False,
                initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.conn.initiate_connection()
        if window is not None:
            self.conn.increment_flow_control_window(window - 65535)
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.settimeout(5)
            self.sock.sendall(data)

    def events(self) -> list[h2.events.Event] | None:
        """Events from the next read; None once the client closed or we stop."""
        data = recv_some(self.server, self.sock)
        if not data:
            return None
        events = self.conn.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
        self.flush()
        return events

    def send_head(self, stream_id: int, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.conn.send_headers(stream_id, [(b":status", b"200"),
                                           (b"content-type", b"application/grpc"),
                                           *extra])

    def send_status(self, stream_id: int, code: int = 0, message: bytes = b"") -> None:
        trailers = [(b"grpc-status", str(code).encode())]
        if message:
            trailers.append((b"grpc-message", message))
        self.conn.send_headers(stream_id, trailers, end_stream=True)

    def send_data_all(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Send ``data`` as the client's window allows, reading (and dropping) what the
        client sends meanwhile. Gives up quietly when the stream or connection ends."""
        view = memoryview(data)
        while True:
            window = min(self.conn.local_flow_control_window(stream_id),
                         self.conn.max_outbound_frame_size)
            if window > 0 or not view:
                chunk, view = view[:window], view[window:]
                self.conn.send_data(stream_id, bytes(chunk), end_stream=end_stream and not view)
                self.flush()
                if not view:
                    return
                continue
            events = self.events()
            if events is None or any(isinstance(e, (h2.events.StreamReset,
                                                    h2.events.ConnectionTerminated))
                                     for e in events):
                return

    def serve(self, on_request: Callable[[H2ServerSide, int, dict[bytes, bytes]], Any],
              on_data: Callable[[H2ServerSide, h2.events.DataReceived], Any] | None = None,
              on_end: Callable[[H2ServerSide, int], Any] | None = None) -> None:
        """Read until the client leaves, calling back on each request's head, data
        and end."""
        while (events := self.events()) is not None:
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    on_request(self, event.stream_id, dict(event.headers))
                elif isinstance(event, h2.events.DataReceived) and on_data is not None:
                    on_data(self, event)
                elif isinstance(event, h2.events.StreamEnded) and on_end is not None:
                    on_end(self, event.stream_id)
            self.flush()


def method_of(head: dict[bytes, bytes]) -> str:
    """The method name from a request's ``:path`` (``/service/method``)."""
    return head.get(b":path", b"").rsplit(b"/", 1)[-1].decode("latin-1")


# --------------------------------------------------------------------------- attacks


def silent_server(*, read: bool = True) -> EvilServer:
    """Accepts TCP connections and never writes a byte (and with ``read`` false never
    reads one either): a plaintext or TLS client gets no preface, no handshake."""

    def handle(server: EvilServer, sock: socket.socket) -> None:
        if not read:
            server.stopping.wait()
            return
        while recv_some(server, sock):
            pass

    return EvilServer(handle, name="silent-server")


def echo_server() -> EvilServer:
    """A well-behaved Triple peer: each DATA chunk is sent straight back (the gRPC
    framing survives), OK status when the client half-closes. ``heads`` collects the
    request heads it saw."""

    def on_request(h2s: H2ServerSide, stream_id: int, head: dict[bytes, bytes]) -> None:
        h2s.server.heads.append(head)
        h2s.send_head(stream_id)

    def on_data(h2s: H2ServerSide, event: h2.events.DataReceived) -> None:
        if event.data:
            h2s.send_data_all(event.stream_id, event.data)

    def on_end(h2s: H2ServerSide, stream_id: int) -> None:
        h2s.send_status(stream_id)

    def handle(server: EvilServer, sock: socket.socket) -> None:
        H2ServerSide(server, sock).serve(on_request, on_data, on_end)

    return EvilServer(handle, name="echo-server")


def non_reading_server(*, stop_on: str = "sink") -> EvilServer:
    """Grants the client an unlimited window, answers any method but ``stop_on``
    with an empty OK reply, and stops reading for good once a ``stop_on`` request
    arrives: the client's request then fills the socket and stays there."""

    def handle(server: EvilServer, sock: socket.socket) -> None:
        h2s = H2ServerSide(server, sock, window=BIG_WINDOW)
        while (events := h2s.events()) is not None:
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    if method_of(dict(event.headers)) == stop_on:
                        server.event("blocked").set()
                        server.stopping.wait()  # never read again
                        return
                elif isinstance(event, h2.events.StreamEnded):
                    h2s.send_head(event.stream_id)
                    h2s.conn.send_data(event.stream_id, encode_message(b""))
                    h2s.send_status(event.stream_id)
            h2s.flush()

    # A small receive buffer: the kernel takes little of the request off the client.
    return EvilServer(handle, name="non-reading-server", rcvbuf=4096)


GZIP_BOMB_MESSAGE = 4 * 1024 * 1024 - 64  # under the client's default 4 MiB receive limit


def gzip_bomb_server(messages: int, final_size: int) -> EvilServer:
    """Answers any call with a reply stream in ``grpc-encoding: gzip``: ``messages``
    messages of zeros that each inflate to just under 4 MiB from ~4 KB on the wire,
    then one that inflates to ``final_size`` bytes (over the client's limit), then an
    OK status. All of it fits the client's first stream window, so a client that
    inflates as it reads the socket holds ``messages`` x 4 MiB before the caller
    takes one."""
    small = encode_message(gzip.compress(bytes(GZIP_BOMB_MESSAGE)), compressed=True)
    final = encode_message(gzip.compress(bytes(final_size)), compressed=True)

    def on_request(h2s: H2ServerSide, stream_id: int, head: dict[bytes, bytes]) -> None:
        h2s.send_head(stream_id, [(b"grpc-encoding", b"gzip")])
        h2s.send_data_all(stream_id, small * messages + final)
        h2s.send_status(stream_id)

    def handle(server: EvilServer, sock: socket.socket) -> None:
        H2ServerSide(server, sock).serve(on_request)

    return EvilServer(handle, name="gzip-bomb-server")


def bad_status_server(status: bytes) -> EvilServer:
    """Holds a ``slow`` call's reply until a ``bad`` call has been answered with a
    response head whose ``:status`` is ``status``; then answers ``slow`` normally
    (its request echoed). Other methods get an echo reply at once."""

    def handle(server: EvilServer, sock: socket.socket) -> None:
        h2s = H2ServerSide(server, sock)
        waiting: dict[int, bytes] = {}  # slow stream id -> its request bytes
        methods: dict[int, str] = {}
        bodies: dict[int, bytes] = {}
        while (events := h2s.events()) is not None:
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    methods[event.stream_id] = method_of(dict(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                elif isinstance(event, h2.events.StreamEnded):
                    sid = event.stream_id
                    method = methods.get(sid)
                    if method == "slow":
                        waiting[sid] = bodies.pop(sid, b"")
                        server.event("slow waiting").set()
                    elif method == "bad":
                        h2s.conn.send_headers(sid, [(b":status", status),
                                                    (b"content-type", b"application/grpc")],
                                              end_stream=True)
                        h2s.flush()
                        for slow_id, body in waiting.items():
                            h2s.send_head(slow_id)
                            h2s.conn.send_data(slow_id, body)
                            h2s.send_status(slow_id)
                        waiting.clear()
                    else:
                        h2s.send_head(sid)
                        h2s.conn.send_data(sid, bodies.pop(sid, b""))
                        h2s.send_status(sid)
            h2s.flush()

    return EvilServer(handle, name="bad-status-server")


def huge_prefix_server() -> EvilServer:
    """Answers a ``huge`` call with a message prefix declaring 4 GiB - 1 and 1 KiB of
    its body, then keeps that stream open; answers other methods with one message."""

    def handle(server: EvilServer, sock: socket.socket) -> None:
        h2s = H2ServerSide(server, sock)
        plain: set[int] = set()

        def on_request(h2s: H2ServerSide, stream_id: int, head: dict[bytes, bytes]) -> None:
            h2s.send_head(stream_id)
            if method_of(head) == "huge":
                h2s.conn.send_data(stream_id, b"\x00\xff\xff\xff\xff" + bytes(1024))
            else:
                plain.add(stream_id)

        def on_end(h2s: H2ServerSide, stream_id: int) -> None:
            if stream_id in plain:
                h2s.conn.send_data(stream_id, encode_message(b"fine"))
                h2s.send_status(stream_id)

        h2s.serve(on_request, on_end=on_end)

    return EvilServer(handle, name="huge-prefix-server")


def garbage_server(choose: Callable[[], tuple[str, bytes, float]]) -> EvilServer:
    """Answers each connection with garbage instead of a server preface, then closes
    it. ``choose()`` returns, per connection, (when, garbage, delay): ``when`` is
    "at-once" (before reading anything), "after-preface" (after the client's first
    bytes), "after-settings" (a valid SETTINGS frame first, garbage after the first
    request's bytes) or "http1" (garbage is an HTTP/1.1 reply); ``delay`` is the
    pause before closing."""

    def handle(server: EvilServer, sock: socket.socket) -> None:
        when, garbage, delay = choose()
        sock.settimeout(5)
        if when == "after-preface":
            recv_some(server, sock)
        elif when == "after-settings":
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            recv_some(server, sock)
        try:
            sock.sendall(garbage)
        except OSError:
            return
        if delay:
            server.wait(delay)

    return EvilServer(handle, name="garbage-server")
