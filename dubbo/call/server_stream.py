"""The server side of one call as a state machine, without I/O.

``ServerStream`` is fed what happens to one HTTP/2 stream (the request's headers were
accepted, data arrived, the client ended or reset it, the connection was lost) and what
the handler or the server decides (send headers, a reply, the status; the deadline
passed, a send stalled, the input was bad, cancel), and answers with what to put on the
wire: a ``Send`` (a HEADERS block, whether it ends the stream, an RST_STREAM code after
it), or raises. Every way a call ends is one row of ``TRANSITIONS``; nothing here knows
about sockets, threads, h2 or clocks (the deadline comes in as an event).

The request half (has the client sent END_STREAM?) is folded into the states, so that
whether our end must also reset a client still sending is read off the table:

::

    IDLE ──ACCEPT──► OPEN ──SEND_HEADERS/SEND_MESSAGE──► REPLYING
      │                │ PEER_END                          │ PEER_END
      │                ▼                                   ▼
      │           OPEN_PEER_DONE ──SEND_*──► REPLYING_PEER_DONE
      │
      ├──REJECT/REFUSE/PEER_RESET/LOST──► REJECTED      (never started)
      │
    any live state ──FINISH/SENT_END──► FINISHED        (our status went out)
    any live state ──PEER_RESET/LOST/DEADLINE/SEND_STALLED/BAD_INPUT/CANCEL_LOCALLY──►
                                        CANCELLED       (``cancel_error`` says why)

Not thread-safe: the owner guards each instance with one lock. The server holds its
connection's ``H2Transport.lock`` around every call here once the call is registered
(before that, ``accept``/``reject``/``refuse`` run on the reader thread alone), except
``receive_data``, which never changes the state and may be called without it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from ..status import RpcError, StatusCode
from ..wire.metadata import response_headers, trailers

__all__ = [
    "CANCEL",
    "NO_ERROR",
    "NOTHING",
    "REFUSED_STREAM",
    "TRANSITIONS",
    "Emit",
    "Event",
    "InvalidTransition",
    "Send",
    "ServerStream",
    "State",
]

Headers = list[tuple[str, str]]

# HTTP/2 error codes (RFC 9113 §7) this machine puts in RST_STREAM.
NO_ERROR = 0x0
REFUSED_STREAM = 0x7
CANCEL = 0x8


class State(enum.IntEnum):
    """Where one server call is. IntEnum: the table lookup hashes in C (hot path)."""

    IDLE = 0  # request headers received, not yet accepted or refused
    OPEN = 1  # accepted; nothing sent yet; the client may still send
    OPEN_PEER_DONE = 2  # accepted; nothing sent yet; the client sent END_STREAM
    REPLYING = 3  # response headers sent; the client may still send
    REPLYING_PEER_DONE = 4  # response headers sent; the client sent END_STREAM
    FINISHED = 5  # our status went out with END_STREAM; the call is over
    CANCELLED = 6  # ended early (reset, lost, deadline, bad input, stalled, cancel)
    REJECTED = 7  # never started: refused, rejected, or reset in the read that opened it


class Event(enum.IntEnum):
    """What can happen to a server call."""

    # decided by the connection about a new request
    ACCEPT = 0  # headers valid, a handler found, a slot free
    REJECT = 1  # answer at once with a trailers-only status (bad headers, unimplemented, ...)
    REFUSE = 2  # RST_STREAM(REFUSED_STREAM): over our stream limit or stopping
    # from the client (h2)
    DATA = 3  # a DATA frame
    PEER_END = 4  # the request's END_STREAM
    PEER_RESET = 5  # RST_STREAM from the client
    LOST = 6  # the connection (or the server) can carry the call no further
    # from the handler
    SEND_HEADERS = 7  # send_initial_metadata()
    SEND_MESSAGE = 8  # a reply (the first one carries the response headers)
    FINISH = 9  # the status, as trailers (or trailers-only)
    SENT_END = 10  # a send that carried our trailers (END_STREAM) returned
    # ends decided by the server while the handler runs (the handler's I/O then raises)
    DEADLINE = 11  # the deadline passed (timer thread)
    SEND_STALLED = 12  # the client read nothing for send_timeout
    BAD_INPUT = 13  # a request could not be decoded (framing, size, compression)
    CANCEL_LOCALLY = 14  # context.cancel(), or the server stopping after its grace


class Emit(enum.IntEnum):
    """The shape of what a transition puts on the wire (its details come from the event)."""

    NOTHING = 0
    HEADERS = 1  # the response headers
    STATUS = 2  # trailers with END_STREAM
    STATUS_ONLY = 3  # a trailers-only response (:status, content-type, grpc-status)
    RESET = 4  # RST_STREAM alone
    RAISE = 5  # nothing: the handler's I/O raises the call's ``cancel_error``


class InvalidTransition(RuntimeError):
    """An event the call's state does not allow: a bug in the caller, not the peer."""

    def __init__(self, state: State, event: Event, reason: str = "") -> None:
        self.state = state
        self.event = event
        super().__init__(reason or f"{event.name} is not allowed in state {state.name}")


class Send:
    """What a transition puts on the wire: ``headers`` (a HEADERS block, or None),
    ``end_stream`` (it carries END_STREAM), then RST_STREAM(``reset``) if not None."""

    __slots__ = ("headers", "end_stream", "reset")

    def __init__(self, headers: Headers | None = None, end_stream: bool = False,
                 reset: int | None = None) -> None:
        self.headers = headers
        self.end_stream = end_stream
        self.reset = reset

    def __bool__(self) -> bool:
        return self.headers is not None or self.reset is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Send) and (self.headers, self.end_stream, self.reset) == \
            (other.headers, other.end_stream, other.reset)

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside

    def __repr__(self) -> str:
        return f"Send(headers={self.headers!r}, end_stream={self.end_stream}, reset={self.reset})"


NOTHING = Send()

S, E = State, Event
_LIVE = (S.OPEN, S.OPEN_PEER_DONE, S.REPLYING, S.REPLYING_PEER_DONE)
_PEER_OPEN = (S.OPEN, S.REPLYING)
_NOT_REPLYING = (S.OPEN, S.OPEN_PEER_DONE)
_PEER_DONE = {S.OPEN: S.OPEN_PEER_DONE, S.REPLYING: S.REPLYING_PEER_DONE}
_END_NOW = (E.DEADLINE, E.SEND_STALLED, E.BAD_INPUT)
# RST_STREAM after an early status to a client still sending: stop it (grpc "Early
# Server Closure"); CANCEL when we gave up (deadline, stall), NO_ERROR for bad input.
_END_NOW_RESET = {E.DEADLINE: CANCEL, E.SEND_STALLED: CANCEL, E.BAD_INPUT: NO_ERROR}


def _build_table() -> dict[tuple[State, Event], tuple[State, Emit, int | None]]:
    """(state, event) -> (next state, what to emit, RST_STREAM code or None).

    A pair that is absent is invalid (``InvalidTransition``). A terminal state maps
    the events races make legal to itself with NOTHING: a reset or END_STREAM arriving
    after our status went out, a deadline firing as the handler finishes.
    """
    t: dict[tuple[State, Event], tuple[State, Emit, int | None]] = {
        (S.IDLE, E.ACCEPT): (S.OPEN, Emit.NOTHING, None),
        (S.IDLE, E.REJECT): (S.REJECTED, Emit.STATUS_ONLY, NO_ERROR),
        (S.IDLE, E.REFUSE): (S.REJECTED, Emit.RESET, REFUSED_STREAM),
        # A request reset in the same read (rapid reset) is never started: it would
        # cost a worker for a call nobody waits for.
        (S.IDLE, E.PEER_RESET): (S.REJECTED, Emit.NOTHING, None),
        (S.IDLE, E.LOST): (S.REJECTED, Emit.NOTHING, None),
    }
    for state in _LIVE:
        peer_open = state in _PEER_OPEN
        replying = state not in _NOT_REPLYING
        status = Emit.STATUS if replying else Emit.STATUS_ONLY
        if peer_open:
            t[state, E.DATA] = (state, Emit.NOTHING, None)
            t[state, E.PEER_END] = (_PEER_DONE[state], Emit.NOTHING, None)
        # (DATA and PEER_END after the client's END_STREAM: h2 refuses them first.)
        t[state, E.PEER_RESET] = (S.CANCELLED, Emit.NOTHING, None)
        t[state, E.LOST] = (S.CANCELLED, Emit.NOTHING, None)
        if replying:
            t[state, E.SEND_MESSAGE] = (state, Emit.NOTHING, None)
            t[state, E.SENT_END] = (S.FINISHED, Emit.RESET if peer_open else Emit.NOTHING,
                                    NO_ERROR if peer_open else None)
            # SEND_HEADERS twice: invalid ("initial metadata already sent").
        else:
            to = S.REPLYING if peer_open else S.REPLYING_PEER_DONE
            t[state, E.SEND_HEADERS] = (to, Emit.HEADERS, None)
            t[state, E.SEND_MESSAGE] = (to, Emit.HEADERS, None)
            # SENT_END before any headers: invalid (every send carries headers first).
        # Our status to a client still sending is followed by RST_STREAM NO_ERROR.
        t[state, E.FINISH] = (S.FINISHED, status, NO_ERROR if peer_open else None)
        for event in _END_NOW:
            t[state, event] = (S.CANCELLED, status,
                               _END_NOW_RESET[event] if peer_open else None)
        # RST_STREAM(CANCEL) even after the client's END_STREAM: our half is still open.
        t[state, E.CANCEL_LOCALLY] = (S.CANCELLED, Emit.RESET, CANCEL)
    for event in (E.DATA, E.PEER_END, E.PEER_RESET, E.LOST, E.FINISH, *_END_NOW,
                  E.CANCEL_LOCALLY):
        # The status already went out: the client's late frames, a deadline or stop
        # racing the handler's end, a second finish() (one status per call) change nothing.
        t[S.FINISHED, event] = (S.FINISHED, Emit.NOTHING, None)
    for event in (E.DATA, E.PEER_END, E.PEER_RESET, E.LOST, E.FINISH, *_END_NOW):
        t[S.CANCELLED, event] = (S.CANCELLED, Emit.NOTHING, None)
    for event in (E.SEND_HEADERS, E.SEND_MESSAGE):
        t[S.CANCELLED, event] = (S.CANCELLED, Emit.RAISE, None)
    # A send that carried our trailers returned after the call was cancelled (deadline
    # or reset during it): a client still sending must still be told to stop; the
    # transport drops the reset if the stream is closed already.
    t[S.CANCELLED, E.SENT_END] = (S.CANCELLED, Emit.RESET, NO_ERROR)
    # A call cancelled without telling the client (client's GOAWAY with an error, the
    # pool stopping) and then cancelled by the server's stop: reset the stream now.
    t[S.CANCELLED, E.CANCEL_LOCALLY] = (S.CANCELLED, Emit.RESET, CANCEL)
    for event in (E.DATA, E.PEER_END, E.PEER_RESET, E.LOST):
        t[S.REJECTED, event] = (S.REJECTED, Emit.NOTHING, None)
    return t


TRANSITIONS = _build_table()
# Why some pairs are absent, for the error message.
_INVALID_REASON = {
    E.SEND_HEADERS: "initial metadata already sent",
    E.SENT_END: "no response headers were sent",
}


class ServerStream:
    """One server call's state (see the module docstring). Guarded by its owner's lock.

    ``cancel_error`` is why a CANCELLED call ended: what the handler's next I/O raises.
    ``status`` is the ``(code, details)`` the call ended with, once it has: the one we
    sent, or why it was cut off (interceptors and metrics read it).
    """

    __slots__ = ("stream_id", "state", "cancel_error", "content_type", "status")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.state = State.IDLE
        self.cancel_error: RpcError | None = None
        self.content_type = "application/grpc"
        self.status: tuple[StatusCode, str] | None = None

    def __repr__(self) -> str:
        return f"<ServerStream {self.stream_id} {self.state.name}>"

    # -- queries ---------------------------------------------------------------------

    @property
    def live(self) -> bool:
        """Accepted and not ended: the handler may still send."""
        return self.state in _LIVE

    @property
    def replying(self) -> bool:
        """The response headers went out (so the status goes as trailers)."""
        return self.state is S.REPLYING or self.state is S.REPLYING_PEER_DONE

    @property
    def peer_done(self) -> bool:
        """The client sent END_STREAM (known only while the call is live)."""
        return self.state is S.OPEN_PEER_DONE or self.state is S.REPLYING_PEER_DONE

    def status_trailers(self, code: StatusCode, details: str = "",
                        metadata: Sequence[tuple[str, str]] = ()) -> Headers:
        """The block that carries the status now: trailers-only before any headers.
        The status is the call's from here on: a peer that leaves while the block is
        on its way (before ``sent_end``) does not turn an answered call into a lost one."""
        self.status = self.status or (code, details)
        return trailers(code, details, metadata, trailers_only=not self.replying,
                        content_type=self.content_type)

    # -- the one transition ------------------------------------------------------------

    def _step(self, event: Event) -> tuple[Emit, int | None]:
        state = self.state
        try:
            to, emit, reset = TRANSITIONS[state, event]
        except KeyError:
            raise InvalidTransition(state, event, _INVALID_REASON.get(event, "")
                                    if state in _LIVE else "") from None
        if emit is Emit.RAISE:
            assert self.cancel_error is not None
            raise self.cancel_error
        self.state = to
        return emit, reset

    # -- the connection's decision on a new request -------------------------------------

    def accept(self, content_type: str = "application/grpc") -> None:
        self._step(E.ACCEPT)
        self.content_type = content_type

    def reject(self, code: StatusCode, details: str, *, http_status: int = 200,
               content_type: str = "application/grpc",
               metadata: Sequence[tuple[str, str]] = ()) -> Send:
        """Answer a request that will not run with a trailers-only status, then
        RST_STREAM NO_ERROR (the client may still be sending its body)."""
        _, reset = self._step(E.REJECT)
        self.status = (code, details)
        return Send(trailers(code, details, metadata, trailers_only=True,
                             content_type=content_type, http_status=http_status),
                    True, reset)

    def refuse(self) -> Send:
        """RST_STREAM(REFUSED_STREAM): the client may retry it elsewhere."""
        _, reset = self._step(E.REFUSE)
        return Send(reset=reset)

    # -- the client (h2 events as plain values) ------------------------------------------

    def receive_data(self) -> None:
        """A DATA frame: valid or not, it never changes the state (no lock needed)."""
        state = self.state
        if (state, E.DATA) not in TRANSITIONS:
            raise InvalidTransition(state, E.DATA)

    def peer_end(self) -> None:
        self._step(E.PEER_END)

    def peer_reset(self, error: RpcError) -> bool:
        """The client reset the stream: True if this ended the call (``error`` is why)."""
        return self._end(E.PEER_RESET, error)

    def lost(self, error: RpcError) -> bool:
        """The connection or the server can carry the call no further."""
        return self._end(E.LOST, error)

    def _end(self, event: Event, error: RpcError) -> bool:
        before = self.state
        self._step(event)
        if self.state is S.CANCELLED and before is not S.CANCELLED:
            self.cancel_error = error
            self.status = self.status or (error.code, error.details)
            return True
        return False

    # -- the handler ------------------------------------------------------------------

    def send_headers(self, metadata: Sequence[tuple[str, str]] = (),
                     encoding: str | None = None, accept_encoding: str | None = None) -> Send:
        """send_initial_metadata(): the response headers, once."""
        self._step(E.SEND_HEADERS)
        return Send(response_headers(self.content_type, metadata,
                                     accept_encoding=accept_encoding, encoding=encoding))

    def send_message(self, metadata: Sequence[tuple[str, str]] = (),
                     encoding: str | None = None, accept_encoding: str | None = None) -> Send:
        """A reply is about to be sent: the response headers go first if they have not.
        Raises ``cancel_error`` once the call was cancelled."""
        emit, _ = self._step(E.SEND_MESSAGE)
        if emit is Emit.HEADERS:
            return Send(response_headers(self.content_type, metadata,
                                         accept_encoding=accept_encoding, encoding=encoding))
        return NOTHING

    def reply_whole(self, code: StatusCode, details: str = "",
                    metadata: Sequence[tuple[str, str]] = (), encoding: str | None = None,
                    accept_encoding: str | None = None,
                    trailing: Sequence[tuple[str, str]] = ()
                    ) -> tuple[Headers | None, Headers, int | None]:
        """A whole reply going out in one write: SEND_MESSAGE, then SENT_END for the
        trailers that follow the message in that write. Returns the response headers
        (None if they went out before), the trailers carrying ``code``, and the
        RST_STREAM code to send after them (None: none). Raises ``cancel_error`` once
        the call was cancelled, as ``send_message`` does."""
        headers = self.send_message(metadata, encoding, accept_encoding).headers
        block = self.status_trailers(code, details, trailing)
        return headers, block, self.sent_end().reset

    def finish(self, code: StatusCode, details: str = "",
               metadata: Sequence[tuple[str, str]] = ()) -> Send:
        """The handler's status: trailers (trailers-only before any headers), then
        RST_STREAM NO_ERROR to a client still sending; nothing once the call ended."""
        state = self.state
        emit, reset = self._step(E.FINISH)
        if emit is Emit.NOTHING:
            return NOTHING
        self.status = self.status or (code, details)
        return Send(trailers(code, details, metadata, trailers_only=state in _NOT_REPLYING,
                             content_type=self.content_type), True, reset)

    def sent_end(self) -> Send:
        """A send carrying our trailers returned: the call is finished."""
        emit, reset = self._step(E.SENT_END)
        return NOTHING if emit is Emit.NOTHING else Send(reset=reset)

    # -- ends decided by the server -------------------------------------------------------

    def end_now(self, event: Event, error: RpcError,
                metadata: Sequence[tuple[str, str]] = ()) -> Send:
        """DEADLINE, SEND_STALLED or BAD_INPUT: ``error``'s status now (the handler may
        be busy), RST_STREAM to a client still sending, and the handler's next I/O
        raises ``error``. Nothing once the call ended."""
        if event not in _END_NOW_RESET:
            raise ValueError(f"end_now() takes DEADLINE, SEND_STALLED or BAD_INPUT, not {event}")
        state = self.state
        emit, reset = self._step(event)
        if emit is Emit.NOTHING:
            return NOTHING
        self.cancel_error = error
        self.status = self.status or (error.code, error.details)
        return Send(trailers(error.code, error.details, metadata,
                             trailers_only=state in _NOT_REPLYING,
                             content_type=self.content_type), True, reset)

    def cancel_locally(self, error: RpcError) -> Send:
        """RST_STREAM(CANCEL); the handler's next I/O raises ``error`` (unless the
        call had already ended)."""
        before = self.state
        emit, reset = self._step(E.CANCEL_LOCALLY)
        if before in _LIVE:
            self.cancel_error = error
            self.status = self.status or (error.code, error.details)
        return NOTHING if emit is Emit.NOTHING else Send(reset=reset)

