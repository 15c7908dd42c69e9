"""HTTP/1.1 on the gRPC port, as Dubbo Java 3.3 serves it (PROTOCOL.md §1, §6):
``curl -H 'content-type: application/json' -d '{"name":"x"}' http://host:port/pkg.S/M``.

A new plaintext connection is first *sniffed*: its first bytes are peeked at (not
read), and the HTTP/2 preface hands the socket to the HTTP/2 server as before, while
an HTTP request line (``POST /...``) makes it an ``Http1Connection``. Requests are
parsed by h11 (sans-I/O, by the authors of h2); the handler runs on a worker thread
like every call, and everything else happens on the server's I/O loop thread.

Bounds: a request head of at most ``max_header_list_size`` bytes, a body of at most
``max_receive_message_size``; a peer that stays silent (or sends a request slowly, or
reads no reply) for ``handshake_timeout`` seconds is disconnected; one request at a time
per connection (pipelined ones wait, bounded too), and at most
``HttpUnary.max_requests_per_connection`` per connection (keep-alive).
"""

from __future__ import annotations

import http
import logging
import re
import socket
import threading
from typing import Any

import h11

from ..status import RpcError
from ..transport.connection import peer_name
from ..transport.timer import TimerHandle
from .http_unary import H2_PREFACE as PREFACE
from .http_unary import HttpCall, HttpResponse, HttpUnary, Prepared

__all__ = ["Http1Connection", "Sniffer", "classify"]

log = logging.getLogger("dubbo.server.http")

_REQUEST_LINE = re.compile(rb"[A-Z]{1,20} ")
_TOKEN_SO_FAR = re.compile(rb"[A-Z]{1,20}")
RECHECK_DELAY = 0.01  # seconds before looking again at a first line cut short
READ_SIZE = 64 * 1024


def classify(data: bytes) -> str | None:
    """``"h2"``, ``"http1"`` or ``None`` (undecided yet) from a connection's first
    bytes: the HTTP/2 preface, an HTTP/1 request line (a method token and a space), or
    anything else (left to HTTP/2, which answers garbage as before)."""
    if PREFACE.startswith(data[:len(PREFACE)]):
        return "h2" if len(data) >= len(PREFACE) else None
    if _REQUEST_LINE.match(data):
        return "http1"
    if _TOKEN_SO_FAR.fullmatch(data):
        return None
    return "h2"


class Sniffer:
    """A socket whose protocol is not known yet (loop thread only)."""

    def __init__(self, http_unary: HttpUnary, sock: socket.socket) -> None:
        self.http = http_unary
        self.server = http_unary.server
        self.sock = sock
        self.closed_event = threading.Event()
        self._timer: TimerHandle | None = None
        self._registered = False

    def start(self) -> None:
        if not self.http.track(self):
            self.sock.close()
            self.closed_event.set()
            return
        loop = self.server._loop
        assert loop is not None
        self.sock.setblocking(False)
        loop.register(self)
        self._registered = True
        # A silent socket is dropped, as ServerConnection drops one without a preface.
        self._timer = self.server.timer.call_later(
            self.server.handshake_timeout, lambda: self._on_loop(self._expired))

    def _on_loop(self, fn: Any) -> None:
        loop = self.server._loop
        if loop is None or not loop.call_soon(fn):
            self.closed_event.set()

    def on_ready(self, readable: bool, writable: bool) -> None:
        try:
            data = self.sock.recv(len(PREFACE), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close()
            return
        if not data:
            self._close()
            return
        kind = classify(data)
        if kind is None:
            # Not enough to tell: look again shortly (the selector is level-triggered,
            # so staying registered would spin on the same peeked bytes).
            self._unregister()
            self.server.timer.call_later(RECHECK_DELAY, lambda: self._on_loop(self._resume))
            return
        self._release()
        if kind == "h2":
            self.server.accept(self.sock, sniffed=True)
        else:
            Http1Connection(self.http, self.sock).start()

    def _resume(self) -> None:
        if not self.closed_event.is_set() and not self._registered:
            assert self.server._loop is not None
            try:
                self.server._loop.register(self)
                self._registered = True
            except (KeyError, ValueError, OSError):
                self._close()

    def _unregister(self) -> None:
        if self._registered:
            assert self.server._loop is not None
            self.server._loop.unregister(self)
            self._registered = False

    def _release(self) -> None:
        """Hand the socket on: no longer ours to watch or close."""
        self._unregister()
        if self._timer is not None:
            self._timer.cancel()
        self.http.untrack(self)
        self.closed_event.set()

    def _expired(self) -> None:
        if not self.closed_event.is_set():
            log.info("closing a connection that sent nothing within %gs",
                     self.server.handshake_timeout)
            self._close()

    def _close(self) -> None:
        if self.closed_event.is_set():
            return
        self._release()
        self.sock.close()

    def close_soon(self) -> None:
        self._on_loop(self._close)


class _Task:
    """One HTTP/1.1 request's handler run, as the worker pool takes it."""

    def __init__(self, connection: Http1Connection, prepared: Prepared, body: bytes,
                 call: HttpCall) -> None:
        self.connection = connection
        self.prepared = prepared
        self.body = body
        self.call = call

    def run(self) -> None:
        connection = self.connection
        try:
            response = connection.http.execute(self.prepared.method, self.body, self.call)
        except Exception:  # a bug of ours: answer anyway
            log.exception("HTTP/1.1 call %s failed", self.prepared.head.path)
            response = HttpResponse.error(500, "Internal Server Error")
        finally:
            self.call.run_callbacks()
            connection.server.call_finished()
        connection.on_loop(lambda: connection.send_response(response))

    def cancel(self, error: RpcError) -> None:
        """Never ran (the pool is shutting down)."""
        response = HttpResponse.error(503, error.details or "server is stopping")
        self.connection.on_loop(lambda: self.connection.send_response(response))


class Http1Connection:
    """One HTTP/1.1 connection. Loop thread only: workers hand their responses over
    with ``call_soon``, so h11's state, ``_outbuf`` and the flags need no lock."""

    def __init__(self, http_unary: HttpUnary, sock: socket.socket) -> None:
        self.http = http_unary
        self.server = http_unary.server
        self.sock = sock
        self.tls = None
        try:
            self.peer = peer_name(sock.family, sock.getpeername())
        except (OSError, IndexError, TypeError):
            self.peer = "unknown"
        self.h11 = h11.Connection(h11.SERVER,
                                  max_incomplete_event_size=self.server.max_header_list_size)
        self.closed_event = threading.Event()
        self._outbuf = bytearray()
        self._want_write = False
        self._busy = False  # a request is being handled or answered
        self._close_after_flush = False
        self._requests = 0
        self._prepared: Prepared | HttpResponse | None = None
        self._body = bytearray()
        self._call: HttpCall | None = None
        self._timer: TimerHandle | None = None
        self._limit = self.server.max_receive_message_size

    # -- plumbing --------------------------------------------------------------------

    def start(self) -> None:
        if not self.http.track(self):
            self.sock.close()
            self.closed_event.set()
            return
        assert self.server._loop is not None
        self.server._loop.register(self)
        self._arm_timer()
        self.on_ready(True, False)  # the request already waiting (it was only peeked)

    def on_loop(self, fn: Any) -> None:
        loop = self.server._loop
        if loop is None or not loop.call_soon(fn):
            self.closed_event.set()

    def close_soon(self) -> None:
        self.on_loop(self._close)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.server.timer.call_later(
            self.server.handshake_timeout, lambda: self.on_loop(self._silent))

    def _silent(self) -> None:
        """Nothing useful from the peer for handshake_timeout seconds."""
        if self.closed_event.is_set() or (self._busy and not self._outbuf):
            return  # the handler is running: its deadline, not ours
        if self._outbuf or self.h11.their_state is h11.IDLE and \
                not self.h11.trailing_data[0]:
            self._close()  # idle keep-alive, or a peer that reads no reply
            return
        self._fail(408, f"request not received within {self.server.handshake_timeout:g}s")

    def _close(self) -> None:
        if self.closed_event.is_set():
            return
        self.closed_event.set()
        if self._timer is not None:
            self._timer.cancel()
        assert self.server._loop is not None
        self.server._loop.unregister(self)
        if self._call is not None:
            self._call.cancel()
        try:
            self.sock.close()
        except OSError:
            pass
        self.http.untrack(self)

    def on_ready(self, readable: bool, writable: bool) -> None:
        if self.closed_event.is_set():
            return
        if writable:
            self._flush()
        if not readable or self.closed_event.is_set():
            return
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close()
            return
        if not data:
            self._close()  # the peer left; a handler still running sees is_active() False
            return
        if self._busy or self._close_after_flush:
            # Pipelined while we answer: h11 keeps it for later, within bounds.
            if self._close_after_flush:
                return
            pending = len(self.h11.trailing_data[0]) + len(data)
            if pending > self.server.max_header_list_size + (self._limit or 0):
                self._close()
                return
        try:
            self.h11.receive_data(data)
        except h11.RemoteProtocolError:
            self._close()
            return
        self._process()

    def _write(self, data: bytes) -> None:
        self._outbuf += data
        self._flush()

    def _flush(self) -> None:
        if self._outbuf:
            try:
                sent = self.sock.send(self._outbuf)
                del self._outbuf[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close()
                return
        want = bool(self._outbuf)
        if want is not self._want_write:
            self._want_write = want
            assert self.server._loop is not None
            self.server._loop.set_write_interest(self, want)
        if not self._outbuf:
            if self._close_after_flush:
                self._close()
            elif not self._busy:
                self._process()  # a pipelined request may be waiting

    # -- requests --------------------------------------------------------------------

    def _process(self) -> None:
        """Parse what has arrived, up to one complete request."""
        while not self._busy and not self._close_after_flush and \
                not self.closed_event.is_set():
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint, f"bad HTTP/1.1 request: {exc}")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.Data):
                if self._limit is not None and len(self._body) + len(event.data) > self._limit:
                    self._fail(413, f"request body over {self._limit} bytes")
                    return
                if not isinstance(self._prepared, HttpResponse):
                    self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _on_request(self, request: h11.Request) -> None:
        self._requests += 1
        headers = list(request.headers)
        # h11 bounds a head still arriving; one that came in a single read is measured
        # here (as HPACK counts a header list: 32 bytes per field).
        size = len(request.target) + sum(len(k) + len(v) + 32 for k, v in headers)
        if size > self.server.max_header_list_size:
            self._fail(431, f"request head over {self.server.max_header_list_size} bytes")
            return
        length = dict(headers).get(b"content-length")
        if length is not None and self._limit is not None and int(length) > self._limit:
            self._fail(413, f"request body of {int(length)} bytes, over {self._limit}")
            return
        self._prepared = self.http.prepare(request.method.decode("latin-1"),
                                           request.target.decode("utf-8", "replace"), headers)
        if self.h11.they_are_waiting_for_100_continue:
            if isinstance(self._prepared, HttpResponse):
                self._fail(self._prepared.status, "", self._prepared)  # skip the body
                return
            go_on = h11.InformationalResponse(status_code=100, headers=[])
            self._write(self.h11.send(go_on) or b"")

    def _dispatch(self) -> None:
        """The request is complete: answer a refusal now, else run its handler."""
        self._busy = True
        if self._timer is not None:
            self._timer.cancel()
        prepared = self._prepared
        body, self._body = bytes(self._body), bytearray()
        if prepared is None:  # pragma: no cover - h11 gives Request before EndOfMessage
            prepared = HttpResponse.error(400, "no request")
        if isinstance(prepared, HttpResponse):
            self.send_response(prepared)
            return
        server = self.server
        if not server.admit():
            self.send_response(HttpResponse.error(429, "server is at capacity"))
            return
        call = self._call = HttpCall(self, prepared.head, prepared.deadline)
        server.submit(_Task(self, prepared, body, call))

    def send_response(self, response: HttpResponse, close: bool = False) -> None:
        """Answer the current request (loop thread); then the next one, if any."""
        if self.closed_event.is_set():
            return
        self._call = None
        self._prepared = None
        keep_alive = not close and not self.server.stopping and \
            self._requests < self.http.max_requests_per_connection and \
            self.h11.their_state is h11.DONE and \
            not any(k == "connection" for k, _ in response.headers)
        headers = [("content-type", response.content_type),
                   ("content-length", str(len(response.body)))]
        headers += [(k, v) for k, v in response.headers]
        if not keep_alive and not any(k == "connection" for k, _ in response.headers):
            headers.append(("connection", "close"))
        try:
            reason = http.HTTPStatus(response.status).phrase.encode()
        except ValueError:
            reason = b""
        try:
            data = b"".join(self.h11.send(event) or b"" for event in (
                h11.Response(status_code=response.status, headers=headers, reason=reason),
                h11.Data(data=response.body), h11.EndOfMessage()))
        except h11.LocalProtocolError:
            self._close()
            return
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
            self._close_after_flush = True
        else:
            self.h11.start_next_cycle()
            self._busy = False
        self._arm_timer()  # the peer must read the reply (or send the next request) in time
        self._write(data)

    def _fail(self, status: int, message: str, response: HttpResponse | None = None) -> None:
        """Answer a request we cannot go on reading, then close."""
        self._busy = True
        if response is None:
            response = HttpResponse.error(status, message)
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self._close()
            return
        self.send_response(response, close=True)
        self._close_after_flush = True
        if not self._outbuf:
            self._close()

