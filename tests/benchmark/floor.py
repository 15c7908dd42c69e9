"""The floor: a minimal gRPC-over-h2 echo client and server, no framework.

What this stack (CPython, blocking sockets on loopback, h2 for HTTP/2) can do at all:
one blocking thread per side, h2 used the plain way (its default configuration,
header validation included), gRPC's 5-byte message prefix, no deadlines, metadata,
compression, status details, flow-control tuning or thread hand-overs. Both sides
announce the same windows and frame size as dubbo (8 MiB per stream, 16 MiB per
connection, 1 MiB frames), so the 4 MiB echo measures work, not WINDOW_UPDATE round
trips. The server serves one connection at a time in its only thread and replies to
each complete request message as it arrives (so one handler serves unary and bidi
calls); the client runs one or more calls at once on one connection in its only
thread. Neither is a usable gRPC implementation: it is the baseline every row is
compared with (the ``floor`` column).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

STREAM_WINDOW = 8 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024
RECV_SIZE = 256 * 1024
DEFAULT_WINDOW = 65535

Handler = Callable[[bytes], bytes]  # request message -> reply message


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def take_message(buffer: bytearray) -> bytes | None:
    """The first complete gRPC message of ``buffer`` (removed from it), or None."""
    if len(buffer) < 5:
        return None
    end = 5 + int.from_bytes(buffer[1:5], "big")
    if len(buffer) < end:
        return None
    with memoryview(buffer) as view:
        message = bytes(view[5:end])
    del buffer[:end]
    return message


class _Peer:
    """One side of a connection: a socket, an h2 state machine and pending sends."""

    def __init__(self, sock: socket.socket, client_side: bool) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=client_side, header_encoding=None))
        self.conn.initiate_connection()
        self.conn.update_settings({
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2000})
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
        # stream id -> [body still to send, trailers to send after it (None: none)]
        self.outgoing: dict[int, list[Any]] = {}
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def queue(self, stream_id: int, body: bytes, trailers: list[tuple[bytes, bytes]] | None,
              end_stream: bool = False) -> None:
        """Send ``body`` on the stream as flow control allows, then trailers or END_STREAM."""
        self.outgoing[stream_id] = [memoryview(body), trailers, end_stream]
        self.send_pending(stream_id)

    def send_pending(self, stream_id: int) -> None:
        pending = self.outgoing.get(stream_id)
        if pending is None:
            return
        body, trailers, end_stream = pending
        while body:
            size = min(len(body), self.conn.local_flow_control_window(stream_id),
                       self.conn.max_outbound_frame_size)
            if size <= 0:
                pending[0] = body
                return
            last = size == len(body)
            self.conn.send_data(stream_id, body[:size], end_stream=last and end_stream)
            body = body[size:]
        del self.outgoing[stream_id]
        if trailers is not None:
            self.conn.send_headers(stream_id, trailers, end_stream=True)

    def receive(self) -> list[h2.events.Event]:
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise ConnectionError("connection closed by the peer")
        events = self.conn.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                for stream_id in (list(self.outgoing) if event.stream_id == 0
                                  else [event.stream_id]):
                    self.send_pending(stream_id)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                for stream_id in list(self.outgoing):
                    self.send_pending(stream_id)
        return events


# -- server --------------------------------------------------------------------------

REPLY_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]
OK_TRAILERS = [(b"grpc-status", b"0")]


def serve_connection(sock: socket.socket, handlers: dict[bytes, Handler]) -> None:
    """Serve one connection until the peer closes it: every complete request message
    gets its handler's reply at once; the request stream's end gets the trailers."""
    peer = _Peer(sock, client_side=False)
    paths: dict[int, bytes] = {}
    buffers: dict[int, bytearray] = {}
    replied: set[int] = set()
    while True:
        try:
            events = peer.receive()
        except (ConnectionError, OSError):
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                paths[event.stream_id] = dict(event.headers)[b":path"]
                buffers[event.stream_id] = bytearray()
            elif isinstance(event, h2.events.DataReceived):
                buffer = buffers[event.stream_id]
                buffer += event.data
                handler = handlers[paths[event.stream_id]]
                while (message := take_message(buffer)) is not None:
                    reply = handler(message)
                    if event.stream_id not in replied:
                        replied.add(event.stream_id)
                        peer.conn.send_headers(event.stream_id, REPLY_HEADERS)
                    peer.queue(event.stream_id, grpc_frame(reply), None)
            elif isinstance(event, h2.events.StreamEnded):
                stream_id = event.stream_id
                if stream_id not in replied:
                    peer.conn.send_headers(stream_id, REPLY_HEADERS)
                replied.discard(stream_id)
                paths.pop(stream_id, None)
                buffers.pop(stream_id, None)
                pending = peer.outgoing.get(stream_id)
                if pending is None:
                    peer.conn.send_headers(stream_id, OK_TRAILERS, end_stream=True)
                else:
                    pending[1] = OK_TRAILERS
            elif isinstance(event, h2.events.ConnectionTerminated):
                return
        peer.flush()


def serve(listener: socket.socket, handlers: dict[bytes, Handler]) -> None:
    """Accept and serve connections one after the other, forever (the caller ends it)."""
    while True:
        sock, _ = listener.accept()
        with sock:
            serve_connection(sock, handlers)


# -- client --------------------------------------------------------------------------

class FloorClient:
    """One connection; calls run one at a time (``call``) or several at once (``calls``)."""

    def __init__(self, port: int) -> None:
        self.peer = _Peer(socket.create_connection(("127.0.0.1", port)), client_side=True)
        self.authority = f"127.0.0.1:{port}".encode()
        # stream id -> the reply bytes received so far
        self.replies: dict[int, bytearray] = {}

    def close(self) -> None:
        try:
            self.peer.conn.close_connection()
            self.peer.flush()
        except OSError:
            pass
        self.peer.sock.close()

    def start(self, path: bytes, message: bytes, end: bool = True) -> int:
        conn = self.peer.conn
        stream_id: int = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
            (b":authority", self.authority), (b"content-type", b"application/grpc"),
            (b"te", b"trailers")])
        self.replies[stream_id] = bytearray()
        self.peer.queue(stream_id, grpc_frame(message), None, end_stream=end)
        self.peer.flush()
        return stream_id

    def send(self, stream_id: int, message: bytes, end: bool = False) -> None:
        self.peer.queue(stream_id, grpc_frame(message), None, end_stream=end)
        self.peer.flush()

    def end(self, stream_id: int) -> None:
        self.peer.conn.end_stream(stream_id)
        self.peer.flush()

    def wait(self) -> list[tuple[int, bytes | None]]:
        """Read until something happens: (stream id, a complete reply message, or None
        when the stream ended), in the order they came."""
        done: list[tuple[int, bytes | None]] = []
        while not done:
            for event in self.peer.receive():
                if isinstance(event, h2.events.DataReceived):
                    buffer = self.replies[event.stream_id]
                    buffer += event.data
                    while (message := take_message(buffer)) is not None:
                        done.append((event.stream_id, message))
                elif isinstance(event, h2.events.TrailersReceived):
                    if dict(event.headers).get(b"grpc-status") != b"0":
                        raise RuntimeError(f"call failed: {event.headers}")
                elif isinstance(event, h2.events.StreamEnded):
                    del self.replies[event.stream_id]
                    done.append((event.stream_id, None))
                elif isinstance(event, (h2.events.StreamReset,
                                        h2.events.ConnectionTerminated)):
                    raise RuntimeError(f"call failed: {event}")
            self.peer.flush()
        return done

    def call(self, path: bytes, message: bytes) -> bytes:
        """One unary call: its reply."""
        stream_id = self.start(path, message)
        reply: bytes | None = None
        while True:
            for sid, item in self.wait():
                if sid != stream_id:
                    continue
                if item is None:
                    if reply is None:
                        raise RuntimeError("stream ended without a reply")
                    return reply
                reply = item
