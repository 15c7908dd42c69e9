"""dubbo.call.client_stream.ClientStream with no socket and no thread: every pair of its
transition table, every pair it must refuse, and the races a threaded client meets."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from dubbo.call.client_stream import (
    CANCEL,
    NO_ERROR,
    REFUSED_STREAM,
    TRANSITIONS,
    ClientStream,
    Input,
    InvalidTransition,
    Send,
    State,
    Step,
)
from dubbo.status import (
    CancelledError,
    DeadlineExceededError,
    RpcError,
    SendStalledError,
    StatusCode,
    UnavailableError,
    error_for,
)

HEAD = [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"x-a", b"1")]
TRAILERS_OK = [(b"grpc-status", b"0"), (b"x-t", b"2")]
TRAILERS_NOT_FOUND = [(b"grpc-status", b"5"), (b"grpc-message", b"no such thing")]
HTTP_503 = [(b":status", b"503"), (b"content-type", b"text/html")]
TERMINAL = {State.CLOSED, State.CANCELLED, State.RESET, State.LOST}
LOCAL_ENDS = {Input.CANCEL, Input.DEADLINE, Input.SEND_STALLED, Input.ITERATOR_DROPPED,
              Input.LOCAL_ERROR}

LOCAL_ERRORS: dict[Input, Callable[[], RpcError]] = {
    Input.CANCEL: lambda: CancelledError(StatusCode.CANCELLED, "Cancelled by the caller"),
    Input.DEADLINE: lambda: DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED, "Deadline"),
    Input.SEND_STALLED: lambda: SendStalledError(StatusCode.CANCELLED, "stalled"),
    Input.ITERATOR_DROPPED: lambda: CancelledError(StatusCode.CANCELLED, "dropped"),
    Input.LOCAL_ERROR: lambda: RpcError(StatusCode.INTERNAL, "malformed response"),
}


def in_state(state: State) -> ClientStream:
    stream = ClientStream()
    stream.state = state
    return stream


def feed(stream: ClientStream, event: Input) -> Step | bool | RpcError | None:
    """Feed ``event`` through the method the client uses for it."""
    if event is Input.START:
        return stream.start()
    if event is Input.SEND_MESSAGE:
        return stream.get_send_error()
    if event is Input.HALF_CLOSE:
        return stream.half_close()
    if event in LOCAL_ENDS:
        return stream.end_locally(LOCAL_ERRORS[event](), event)
    if event is Input.RESPONSE_HEADERS:
        return stream.response_headers(HEAD, end_stream=False)
    if event is Input.DATA:
        return stream.receive_data()
    if event is Input.TRAILERS:
        return stream.trailers(TRAILERS_OK)
    if event is Input.FINAL_HEADERS:
        return stream.response_headers(HTTP_503, end_stream=False)
    if event is Input.END_STREAM:
        return stream.end_stream()
    if event is Input.PEER_RESET:
        return stream.reset_by_peer(CANCEL)
    if event is Input.GOAWAY:
        return stream.refused_by_goaway(0)
    if event is Input.CONNECTION_LOST:
        return stream.connection_lost(StatusCode.UNAVAILABLE, "connection lost")
    raise AssertionError(event)


# -- the table, pair by pair ----------------------------------------------------------


@pytest.mark.parametrize("state, event", sorted(TRANSITIONS, key=str),
                         ids=lambda v: v.name if isinstance(v, (State, Input)) else str(v))
def test_every_transition_of_the_table(state: State, event: Input) -> None:
    next_state, send, reset_code = TRANSITIONS[(state, event)]
    stream = in_state(state)
    result = feed(stream, event)
    assert stream.state is next_state
    if event is Input.SEND_MESSAGE:  # a question: may DATA go out now?
        assert (result is None) == (send is Send.DATA)
        if result is not None:
            assert isinstance(result, RpcError)
        return
    if event is Input.DATA:  # for the caller, or dropped after the end
        assert result is (state not in TERMINAL)
        return
    assert isinstance(result, Step)
    assert (result.state, result.send, result.reset_code) == (next_state, send, reset_code)
    # Exactly the steps that leave a live state for a terminal one end the call.
    ends = state not in TERMINAL and next_state in TERMINAL
    assert (result.final is not None) == ends
    assert stream.done == (next_state in TERMINAL)
    if ends:
        assert stream.final_error() is not None or \
            (stream.status is not None and stream.status.code is StatusCode.OK)


INVALID = [(state, event) for state in State for event in Input
           if (state, event) not in TRANSITIONS]


@pytest.mark.parametrize("state, event", INVALID,
                         ids=lambda v: v.name if isinstance(v, (State, Input)) else str(v))
def test_every_pair_outside_the_table_is_refused(state: State, event: Input) -> None:
    stream = in_state(state)
    with pytest.raises(InvalidTransition, match=event.name):
        feed(stream, event)
    assert stream.state is state  # a refused input changes nothing


def test_the_table_is_whole() -> None:
    # Every state is reachable and left (or terminal); every terminal state absorbs
    # every input but START; nothing leaves a terminal state.
    targets = {next_state for next_state, _, _ in TRANSITIONS.values()}
    assert targets | {State.IDLE} == set(State)
    for (state, event), (next_state, send, _) in TRANSITIONS.items():
        if state in TERMINAL:
            assert next_state is state and send is Send.NOTHING, (state, event)
    for state in TERMINAL:
        assert {e for s, e in TRANSITIONS if s is state} == set(Input) - {Input.START}
    assert len(INVALID) > 20  # h2's order (no DATA before HEADERS...) is enforced


# -- final statuses -------------------------------------------------------------------


def unary_until_response(stream: ClientStream) -> None:
    assert stream.start().send is Send.HEADERS
    assert stream.get_send_error() is None
    assert stream.half_close().send is Send.END_STREAM
    assert stream.response_headers(HEAD, end_stream=False).final is None
    assert stream.initial_metadata == [("x-a", "1")]
    assert stream.receive_data() is True


def test_a_unary_call_from_start_to_ok() -> None:
    stream = ClientStream()
    unary_until_response(stream)
    step = stream.trailers(TRAILERS_OK)
    assert step.state is State.CLOSED and step.send is Send.NOTHING
    assert step.final is not None and step.final.code is StatusCode.OK
    assert step.final.metadata == [("x-t", "2")]
    assert stream.drain and stream.final_error() is None and not stream.unprocessed


def test_a_non_ok_status_becomes_the_error_of_its_code() -> None:
    stream = ClientStream()
    unary_until_response(stream)
    stream.trailers(TRAILERS_NOT_FOUND)
    error = stream.final_error()
    assert type(error) is RpcError and error.code is StatusCode.NOT_FOUND
    assert error.details == "no such thing" and error.initial_metadata == [("x-a", "1")]


def test_trailers_only_while_still_sending_stops_the_request() -> None:
    stream = ClientStream()
    stream.start()
    step = stream.response_headers([(b":status", b"200"), (b"grpc-status", b"7")],
                                   end_stream=True)
    assert step.state is State.CLOSED
    assert (step.send, step.reset_code) == (Send.RST_STREAM, NO_ERROR)  # early closure
    assert step.final is not None and step.final.code is StatusCode.PERMISSION_DENIED
    assert stream.initial_metadata == []
    assert isinstance(stream.get_send_error(), CancelledError)


def test_a_non_grpc_head_resets_the_stream_the_server_keeps_open() -> None:
    stream = ClientStream()
    stream.start()
    stream.half_close()
    step = stream.response_headers(HTTP_503, end_stream=False)
    assert (step.send, step.reset_code) == (Send.RST_STREAM, CANCEL)
    assert isinstance(stream.final_error(), UnavailableError)  # 503 -> UNAVAILABLE


def test_headers_with_end_stream_but_no_status_are_internal() -> None:
    stream = ClientStream()
    stream.start()
    stream.half_close()
    step = stream.response_headers(HEAD, end_stream=True)
    assert step.state is State.CLOSED and step.final is not None
    assert step.final.code is StatusCode.INTERNAL
    assert "without grpc-status" in step.final.details
    assert stream.initial_metadata == [("x-a", "1")]


@pytest.mark.parametrize("trailers, code", [(TRAILERS_OK, StatusCode.INTERNAL),
                                            (TRAILERS_NOT_FOUND, StatusCode.NOT_FOUND)])
def test_a_reply_ended_inside_a_message_fails_ahead_of_its_messages(trailers, code) -> None:
    stream = ClientStream()
    unary_until_response(stream)
    step = stream.trailers(trailers, complete=False)
    assert step.final is not None and step.final.code is code
    assert not stream.drain  # the error goes ahead of the messages queued before it


def test_end_stream_without_trailers_is_internal() -> None:
    stream = ClientStream()
    unary_until_response(stream)
    step = stream.end_stream(complete=True)
    assert step.final is not None and step.final.code is StatusCode.INTERNAL
    assert stream.drain


@pytest.mark.parametrize("error_code, code, unprocessed", [
    (CANCEL, StatusCode.CANCELLED, False),
    (REFUSED_STREAM, StatusCode.UNAVAILABLE, True),
    (0x2, StatusCode.INTERNAL, False),
])
def test_a_reset_by_the_server(error_code, code, unprocessed) -> None:
    stream = ClientStream()
    unary_until_response(stream)
    step = stream.reset_by_peer(error_code)
    assert step.state is State.RESET and step.send is Send.NOTHING
    error = stream.final_error()
    assert error is not None and error.code is code
    assert type(error) is type(error_for(code))
    assert f"error code {error_code}" in error.details
    assert stream.unprocessed is unprocessed and not stream.drain


@pytest.mark.parametrize("code, expected", [
    (StatusCode.UNAVAILABLE, UnavailableError),
    (StatusCode.CANCELLED, UnavailableError),  # closed by us: the call sees UNAVAILABLE
    (StatusCode.INTERNAL, RpcError),  # an HTTP/2 protocol error
])
def test_a_lost_connection_fails_with_an_error_whose_class_matches_its_code(code, expected):
    stream = ClientStream()
    unary_until_response(stream)
    step = stream.connection_lost(code, "connection lost")
    assert step.state is State.LOST and step.send is Send.NOTHING
    error = stream.final_error()
    assert type(error) is expected
    assert error.code is (StatusCode.UNAVAILABLE if code is StatusCode.CANCELLED else code)


@pytest.mark.parametrize("error, event", [
    (DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED, "late"), Input.DEADLINE),
    (SendStalledError(StatusCode.CANCELLED, "stalled"), Input.SEND_STALLED),
    (RpcError(StatusCode.INTERNAL, "bad"), Input.LOCAL_ERROR),
])
def test_a_local_end_says_its_cause_from_the_error(error, event) -> None:
    stream = ClientStream()
    stream.start()
    step = stream.end_locally(error)
    assert step.state is State.CANCELLED and (step.send, step.reset_code) == (
        Send.RST_STREAM, CANCEL)
    assert stream.error is error and stream.final_error() is error
    assert stream.status is None  # no status came from the server
    with pytest.raises(ValueError):
        ClientStream().end_locally(error, Input.TRAILERS)


def test_a_call_that_never_got_a_stream_sends_nothing() -> None:
    stream = ClientStream()
    step = stream.end_locally(DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED, "slot"))
    assert step.state is State.CANCELLED and step.send is Send.NOTHING
    stream = ClientStream()
    assert stream.connection_lost(StatusCode.UNAVAILABLE, "draining").send is Send.NOTHING


def test_errors_named_after_a_code_carry_only_that_code() -> None:
    for cls, code in ((UnavailableError, StatusCode.UNAVAILABLE),
                      (CancelledError, StatusCode.CANCELLED),
                      (DeadlineExceededError, StatusCode.DEADLINE_EXCEEDED)):
        assert cls().code is code and cls(code).code is code
        with pytest.raises(ValueError, match="error_for"):
            cls(StatusCode.INTERNAL, "wrong class")
        assert type(error_for(code)) is cls
    assert type(error_for(StatusCode.INTERNAL)) is RpcError


# -- races ----------------------------------------------------------------------------


def test_cancel_while_a_send_is_blocked() -> None:
    # The sender waits for window with the stream OPEN; the caller cancels. The
    # sender, woken, asks again and gets the cancel; its half-close, if it got that
    # far, is a no-op.
    stream = ClientStream()
    stream.start()
    assert stream.get_send_error() is None
    cancel = CancelledError(StatusCode.CANCELLED, "Cancelled by the caller")
    step = stream.end_locally(cancel, Input.CANCEL)
    assert (step.send, step.reset_code) == (Send.RST_STREAM, CANCEL)
    assert stream.get_send_error() is cancel
    assert stream.half_close() == Step(State.CANCELLED)
    assert stream.trailers(TRAILERS_OK).final is None  # the reply read meanwhile
    assert stream.final_error() is cancel


def test_deadline_during_a_send() -> None:
    stream = ClientStream()
    stream.start()
    deadline = DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    step = stream.end_locally(deadline)  # raised by the blocked send
    assert step.state is State.CANCELLED and step.reset_code == CANCEL
    assert step.final is not None and step.final.code is StatusCode.DEADLINE_EXCEEDED
    # The reader, meanwhile holding the response headers of the same stream: no-ops.
    assert stream.response_headers(HEAD, end_stream=False).final is None
    assert stream.receive_data() is False
    assert stream.final_error() is deadline


def test_trailers_and_rst_in_the_same_read() -> None:
    stream = ClientStream()
    stream.start()
    stream.response_headers(HEAD, end_stream=False)
    step = stream.trailers(TRAILERS_OK)
    assert (step.send, step.reset_code) == (Send.RST_STREAM, NO_ERROR)  # still sending
    assert stream.reset_by_peer(CANCEL) == Step(State.CLOSED)  # the status stands
    assert stream.final_error() is None and stream.status is not None
    assert stream.status.code is StatusCode.OK


def test_rst_then_trailers_keeps_the_reset() -> None:
    stream = ClientStream()
    unary_until_response(stream)
    stream.reset_by_peer(CANCEL)
    assert stream.trailers(TRAILERS_OK).final is None
    assert stream.final_error().code is StatusCode.CANCELLED


@pytest.mark.parametrize("state", [State.OPEN, State.REQUEST_SENT, State.STREAMING])
def test_goaway_with_the_stream_unprocessed_is_not_sent(state) -> None:
    stream = in_state(state)
    step = stream.refused_by_goaway(0)
    assert step.state is State.LOST and step.send is Send.NOTHING
    assert stream.unprocessed
    error = stream.final_error()
    assert isinstance(error, UnavailableError) and "GOAWAY" in error.details


def test_cancel_after_completion_is_a_no_op() -> None:
    stream = ClientStream()
    unary_until_response(stream)
    stream.trailers(TRAILERS_OK)
    for event in LOCAL_ENDS:
        step = stream.end_locally(LOCAL_ERRORS[event](), event)
        assert step == Step(State.CLOSED)
    assert stream.error is None and stream.final_error() is None


def test_half_close_after_the_answer_is_a_no_op() -> None:
    stream = ClientStream()
    stream.start()
    stream.response_headers(HEAD, end_stream=False)
    stream.trailers(TRAILERS_OK)
    assert stream.half_close() == Step(State.CLOSED)


# -- the client's use of the machine (a lock, no socket, no thread) ----------------------


class _Transport:
    """What ClientCall needs of its connection for these checks."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.ended: list[Step] = []

    def apply_end(self, call: object, step: Step) -> None:
        self.ended.append(step)


def _call(transport: _Transport):
    from dubbo.client.client import ClientCall

    call = ClientCall(transport, None, None)  # type: ignore[arg-type]
    call.stream.start()
    return call


def test_a_goaway_refused_call_counts_as_not_sent_unless_a_request_was_taken() -> None:
    transport = _Transport()
    untouched = _call(transport)
    untouched.stream.refused_by_goaway(0)
    assert untouched.never_processed()
    assert not untouched.take_requests()  # over: the sender must not take one now
    taken = _call(transport)
    assert taken.take_requests()
    taken.stream.refused_by_goaway(0)
    assert not taken.never_processed()  # the caller's iterator moved: cannot retry


def test_client_call_cancel_goes_through_the_machine_once() -> None:
    transport = _Transport()
    call = _call(transport)
    assert call.end_locally(CancelledError(StatusCode.CANCELLED, "x"), Input.CANCEL)
    assert not call.end_locally(CancelledError(StatusCode.CANCELLED, "again"), Input.CANCEL)
    assert [(s.state, s.send, s.reset_code) for s in transport.ended] == [
        (State.CANCELLED, Send.RST_STREAM, CANCEL)]
    assert call.local_error is not None and call.local_error.details == "x"
