"""The life of one client call as a state machine, without I/O.

``ClientStream`` is fed what happens to one call, as plain values: what the server
sent (response headers, DATA, trailers or a trailers-only response, the end of its
stream, RST_STREAM, a GOAWAY that leaves the stream unprocessed, the connection's
loss) and what the caller's side did (sent the request headers, a message, the
end of the request; cancelled, hit its deadline, stalled, dropped the response
iterator, found the response broken). Each input is one lookup in ``TRANSITIONS``;
the answer says what to send (nothing, HEADERS, DATA, END_STREAM or RST_STREAM with
a code) and, when the input ended the call, its final status. Every way a client
call can end is one of these transitions.

The machine holds no lock: ``dubbo.client`` feeds it under its connection's
``H2Transport.lock``, so it sees one input at a time. Inputs that races make legal
(a cancel after the trailers arrived, DATA already read when the caller cancelled,
the end of the request after the server answered) are explicit no-ops in the table;
anything else it does not list raises ``InvalidTransition``.

States (``->`` the inputs that leave them)::

    IDLE ----------START--------> OPEN --HALF_CLOSE--> REQUEST_SENT
                                   |                        |
                          RESPONSE_HEADERS          RESPONSE_HEADERS
                                   v                        v
                               STREAMING --HALF_CLOSE--> RECEIVING

    any of the four live states -> CLOSED     the server's status (TRAILERS,
                                              FINAL_HEADERS, END_STREAM without one)
                                -> CANCELLED  ended by us (CANCEL, DEADLINE,
                                              SEND_STALLED, ITERATOR_DROPPED,
                                              LOCAL_ERROR): RST_STREAM(CANCEL)
                                -> RESET      RST_STREAM from the server
                                -> LOST       GOAWAY below our stream, connection lost
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

from ..status import RpcError, SendStalledError, StatusCode, error_for, status_from_rst
from ..wire.metadata import (
    ResponseStatus,
    check_response_headers,
    decode_metadata,
    status_from_headers,
)

__all__ = [
    "ClientStream",
    "Input",
    "InvalidTransition",
    "Send",
    "State",
    "Step",
    "TRANSITIONS",
    "NO_ERROR",
    "CANCEL",
    "REFUSED_STREAM",
]

# HTTP/2 error codes (RFC 9113 §7) this machine sends or reads, as plain ints.
NO_ERROR = 0x0
REFUSED_STREAM = 0x7
CANCEL = 0x8

Headers = Sequence[tuple[bytes, bytes]]


class State(enum.IntEnum):
    # IntEnum (as h2's StreamState): hashing an int is C code, an Enum's is Python,
    # and every input is a dict lookup keyed by (state, input).
    IDLE = 1  # created; no HEADERS sent yet
    OPEN = 2  # HEADERS sent, request open, no response headers yet
    REQUEST_SENT = 3  # request ended (END_STREAM), no response headers yet
    STREAMING = 4  # response headers in, request still open
    RECEIVING = 5  # response headers in, request ended
    CLOSED = 6  # the server's status arrived
    CANCELLED = 7  # ended by us
    RESET = 8  # the server reset the stream
    LOST = 9  # GOAWAY refused it, or the connection is gone


class Input(enum.IntEnum):
    # Our side of the call.
    START = 1  # the request headers go out
    SEND_MESSAGE = 2
    HALF_CLOSE = 3  # the request is complete (END_STREAM)
    CANCEL = 4  # by the caller (or a losing fork)
    DEADLINE = 5
    SEND_STALLED = 6  # the peer took nothing for the send timeout
    ITERATOR_DROPPED = 7  # the response iterator was garbage-collected
    LOCAL_ERROR = 8  # broken response data, request iterator raised, ...
    # The server's side.
    RESPONSE_HEADERS = 9
    DATA = 10
    TRAILERS = 11  # the status block with END_STREAM (trailers or trailers-only)
    # A response head that decides the status (an HTTP error, not gRPC) while the
    # server's side stays open.
    FINAL_HEADERS = 12
    END_STREAM = 13  # END_STREAM without a status
    PEER_RESET = 14  # RST_STREAM
    GOAWAY = 15  # a GOAWAY whose last stream id is below ours: never processed
    CONNECTION_LOST = 16


class Send(enum.Enum):
    """What the I/O layer must send for a step."""

    NOTHING = "nothing"
    HEADERS = "headers"
    DATA = "data"
    END_STREAM = "end stream"
    RST_STREAM = "rst stream"


class InvalidTransition(Exception):
    """An input the state machine does not allow in its state: a bug of ours, or (for
    the server's inputs) a response h2 should not have let through."""


class Step(NamedTuple):
    """One transition's result. ``reset_code`` is the RST_STREAM error code when
    ``send`` is ``RST_STREAM``; ``final`` is the call's final status when this step
    ended the call (``None`` otherwise, and for the no-ops after the end). A tuple:
    one is made for every call's end, and a frozen dataclass costs several times
    more to build."""

    state: State
    send: Send = Send.NOTHING
    reset_code: int | None = None
    final: ResponseStatus | None = None


_S, _I = State, Input
TERMINAL = frozenset({_S.CLOSED, _S.CANCELLED, _S.RESET, _S.LOST})
_LIVE = (_S.OPEN, _S.REQUEST_SENT, _S.STREAMING, _S.RECEIVING)
_LOCAL_ENDS = frozenset({_I.CANCEL, _I.DEADLINE, _I.SEND_STALLED, _I.ITERATOR_DROPPED,
                         _I.LOCAL_ERROR})
_RST_NO_ERROR = (Send.RST_STREAM, NO_ERROR)
_RST_CANCEL = (Send.RST_STREAM, CANCEL)
_NOTHING = (Send.NOTHING, None)

# The one table: (state, input) -> (next state, what to send, RST_STREAM code).
# Pairs it does not hold are invalid.
TRANSITIONS: dict[tuple[State, Input], tuple[State, Send, int | None]] = {
    # -- our request --
    (_S.IDLE, _I.START): (_S.OPEN, Send.HEADERS, None),
    (_S.OPEN, _I.SEND_MESSAGE): (_S.OPEN, Send.DATA, None),
    (_S.STREAMING, _I.SEND_MESSAGE): (_S.STREAMING, Send.DATA, None),
    (_S.OPEN, _I.HALF_CLOSE): (_S.REQUEST_SENT, Send.END_STREAM, None),
    (_S.STREAMING, _I.HALF_CLOSE): (_S.RECEIVING, Send.END_STREAM, None),
    # -- the response (h2 lets no DATA or trailers before the response headers) --
    (_S.OPEN, _I.RESPONSE_HEADERS): (_S.STREAMING, Send.NOTHING, None),
    (_S.REQUEST_SENT, _I.RESPONSE_HEADERS): (_S.RECEIVING, Send.NOTHING, None),
    (_S.STREAMING, _I.DATA): (_S.STREAMING, Send.NOTHING, None),
    (_S.RECEIVING, _I.DATA): (_S.RECEIVING, Send.NOTHING, None),
    # The status ends the call. If we are still sending, stop: RST_STREAM(NO_ERROR),
    # grpc PROTOCOL-HTTP2.md "early server closure" (trailers-only from OPEN).
    (_S.OPEN, _I.TRAILERS): (_S.CLOSED, *_RST_NO_ERROR),
    (_S.REQUEST_SENT, _I.TRAILERS): (_S.CLOSED, *_NOTHING),
    (_S.STREAMING, _I.TRAILERS): (_S.CLOSED, *_RST_NO_ERROR),
    (_S.RECEIVING, _I.TRAILERS): (_S.CLOSED, *_NOTHING),
    # A head that ends the call but leaves the server's side open: we reset it.
    (_S.OPEN, _I.FINAL_HEADERS): (_S.CLOSED, *_RST_CANCEL),
    (_S.REQUEST_SENT, _I.FINAL_HEADERS): (_S.CLOSED, *_RST_CANCEL),
    # END_STREAM without trailers: INTERNAL "stream ended without grpc-status".
    (_S.STREAMING, _I.END_STREAM): (_S.CLOSED, *_RST_NO_ERROR),
    (_S.RECEIVING, _I.END_STREAM): (_S.CLOSED, *_NOTHING),
    # -- the stream dies: nothing to send (it is reset, or there is no connection) --
    **{(state, _I.PEER_RESET): (_S.RESET, *_NOTHING) for state in _LIVE},
    **{(state, _I.GOAWAY): (_S.LOST, *_NOTHING) for state in _LIVE},
    **{(state, _I.CONNECTION_LOST): (_S.LOST, *_NOTHING) for state in (_S.IDLE, *_LIVE)},
    # -- ended by us: reset the stream, if it was started --
    **{(state, end): (_S.CANCELLED, *_RST_CANCEL) for state in _LIVE for end in _LOCAL_ENDS},
    **{(_S.IDLE, end): (_S.CANCELLED, *_NOTHING) for end in _LOCAL_ENDS},
    # -- races after the end: no-ops (a cancel after the trailers, DATA or a reset
    # read in the same batch as the cancel, the request ended after the answer) --
    **{(state, event): (state, *_NOTHING) for state in TERMINAL for event in Input
       if event is not _I.START},
}

# Steps that end nothing, made once (the hot path allocates none).
_STEPS = {key: Step(*value) for key, value in TRANSITIONS.items()}
_TAKES_DATA = frozenset(state for (state, event), (_, _, _) in TRANSITIONS.items()
                        if event is _I.DATA and state not in TERMINAL)
_SENDS = frozenset(state for (state, event), (_, send, _) in TRANSITIONS.items()
                   if event is _I.SEND_MESSAGE and send is Send.DATA)



class ClientStream:
    """One client call's state. Not thread-safe: feed it under one lock.

    ``status`` is the final status the server (or the connection) gave; ``error`` the
    error a local end (cancel, deadline, ...) raised, which the caller sees instead.
    ``initial_metadata`` is set when the response headers (or the status) arrive.
    ``drain``: the messages received before the status are still delivered (false when
    an error must reach the reader ahead of them). ``unprocessed``: the server says it
    never processed the stream (GOAWAY below it, REFUSED_STREAM), so it may be retried
    elsewhere as not sent.
    """

    __slots__ = ("state", "initial_metadata", "status", "error", "drain", "unprocessed")

    def __init__(self) -> None:
        self.state = State.IDLE
        self.initial_metadata: list[tuple[str, str | bytes]] | None = None
        self.status: ResponseStatus | None = None
        self.error: RpcError | None = None
        self.drain = True
        self.unprocessed = False

    def __repr__(self) -> str:
        return f"<ClientStream {self.state.name}>"

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def _go(self, event: Input) -> Step:
        step = _STEPS.get((self.state, event))
        if step is None:
            raise InvalidTransition(f"{event.name} in state {self.state.name}")
        self.state = step.state
        return step

    def _end(self, event: Input, status: ResponseStatus) -> Step:
        """A transition that ends the call with ``status`` (if it is not over yet)."""
        was_done = self.state in TERMINAL
        step = self._go(event)
        if was_done:
            return step
        if event in _LOCAL_ENDS:
            final = status
        else:
            self.status = final = status
            if self.initial_metadata is None:
                self.initial_metadata = []
        return Step(step.state, step.send, step.reset_code, final)

    # -- our side --------------------------------------------------------------------

    def start(self) -> Step:
        """The request headers are being sent."""
        return self._go(Input.START)

    def get_send_error(self) -> RpcError | None:
        """Why a request message may not be sent now (``None``: it may). This is the
        SEND_MESSAGE input, which never changes the state: senders ask it under the
        lock before each push into h2."""
        if self.state in _SENDS:
            return None
        if self.error is not None:
            return self.error
        if self.state in TERMINAL:
            # The server has answered: stop sending (its early closure).
            return error_for(StatusCode.CANCELLED, "call already completed")
        raise InvalidTransition(f"SEND_MESSAGE in state {self.state.name}")

    def half_close(self) -> Step:
        """The request's END_STREAM went out."""
        return self._go(Input.HALF_CLOSE)

    def end_locally(self, error: RpcError, event: Input | None = None) -> Step:
        """End the call from our side with ``error`` (which the caller will see).
        ``event`` is the cause (CANCEL, DEADLINE, SEND_STALLED, ITERATOR_DROPPED,
        LOCAL_ERROR); by default it follows from ``error``'s code. A no-op, with no
        ``final``, when the call is already over."""
        if event is None:
            event = (Input.SEND_STALLED if isinstance(error, SendStalledError) else
                     Input.DEADLINE if error.code is StatusCode.DEADLINE_EXCEEDED else
                     Input.LOCAL_ERROR)
        if event not in _LOCAL_ENDS:
            raise ValueError(f"{event} is not a local end")
        was_done = self.state in TERMINAL
        step = self._end(event, ResponseStatus(error.code, error.details, []))
        if not was_done:
            self.error = error
            self.drain = False
        return step

    # -- the server's side -----------------------------------------------------------

    def response_headers(self, headers: Headers, end_stream: bool,
                         complete: bool = True) -> Step:
        """The response's first HEADERS block (``end_stream``: it also ends the
        server's side). A block that decides the status (trailers-only, an HTTP error,
        not gRPC) ends the call."""
        if self.state in TERMINAL:
            return self._go(Input.RESPONSE_HEADERS)  # cancelled meanwhile: no-op
        final = check_response_headers(headers)
        if final is not None:
            event = Input.TRAILERS if end_stream else Input.FINAL_HEADERS
            return self._end(event, final)
        step = self._go(Input.RESPONSE_HEADERS)
        self.initial_metadata = decode_metadata(headers)
        if end_stream:
            return self.end_stream(complete)
        return step

    def receive_data(self) -> bool:
        """DATA arrived: True when it is for the caller, False when the call is over
        (a race: drop it). DATA never changes the state, so this only reads it, and
        may do so without the lock: a stale answer feeds an inbox just abandoned."""
        state = self.state
        if state in _TAKES_DATA:  # the per-frame path: one set lookup
            return True
        if (state, Input.DATA) not in _STEPS:
            raise InvalidTransition(f"DATA in state {state.name}")
        return state not in TERMINAL

    def trailers(self, headers: Headers, complete: bool = True) -> Step:
        """The trailers (they end the server's side). ``complete``: the DATA before
        them ended on a message boundary."""
        if self.state in TERMINAL:
            return self._go(Input.TRAILERS)
        return self._ended_by_server(Input.TRAILERS, status_from_headers(headers), complete)

    def end_stream(self, complete: bool = True) -> Step:
        """END_STREAM on DATA (or on response headers) without a status."""
        status = ResponseStatus(StatusCode.INTERNAL, "stream ended without grpc-status", [])
        return self._ended_by_server(Input.END_STREAM, status, complete)

    def _ended_by_server(self, event: Input, status: ResponseStatus, complete: bool) -> Step:
        if not complete:
            # A truncated reply is not a success, and its error goes ahead of the
            # messages before it.
            if status.code is StatusCode.OK:
                status = ResponseStatus(StatusCode.INTERNAL, "response ended inside a message",
                                        [])
            step = self._end(event, status)
            if step.final is not None:
                self.drain = False
            return step
        return self._end(event, status)

    def reset_by_peer(self, error_code: int) -> Step:
        """RST_STREAM from the server."""
        status = ResponseStatus(status_from_rst(error_code),
                                f"stream reset by server (error code {int(error_code)})", [])
        step = self._end(Input.PEER_RESET, status)
        if step.final is not None:
            self.drain = False
            self.unprocessed = error_code == REFUSED_STREAM
        return step

    def refused_by_goaway(self, error_code: int) -> Step:
        """A GOAWAY whose last stream id is below this stream: the server never
        processed it (PROTOCOL-HTTP2.md "GOAWAY"), so it may be tried elsewhere."""
        status = ResponseStatus(StatusCode.UNAVAILABLE,
                                f"server sent GOAWAY (error code {error_code})", [])
        step = self._end(Input.GOAWAY, status)
        if step.final is not None:
            self.drain = False
            self.unprocessed = True
        return step

    def connection_lost(self, code: StatusCode, details: str) -> Step:
        """The connection is gone (``code`` as the transport reports it; a
        connection closed by us, CANCELLED, is UNAVAILABLE to the call)."""
        if code is StatusCode.CANCELLED:
            code = StatusCode.UNAVAILABLE
        step = self._end(Input.CONNECTION_LOST, ResponseStatus(code, details, []))
        if step.final is not None:
            self.drain = False
        return step

    # -- what the caller sees --------------------------------------------------------

    def final_error(self) -> RpcError | None:
        """The error the call ended with, as the caller sees it; ``None`` while it
        runs or when it succeeded."""
        if self.error is not None:
            return self.error
        status = self.status
        if status is None or status.code is StatusCode.OK:
            return None
        return error_for(status.code, status.details, status.metadata,
                         initial_metadata=self.initial_metadata)
