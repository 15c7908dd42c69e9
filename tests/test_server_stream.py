"""ServerStream, the server call's state machine, driven with no socket and no thread:
every (state, event) pair of its table, the pairs it refuses, and the races the
hostile-peer work found."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dubbo.call.server_stream import (
    CANCEL,
    NO_ERROR,
    NOTHING,
    REFUSED_STREAM,
    TRANSITIONS,
    Emit,
    Event,
    InvalidTransition,
    Send,
    ServerStream,
    State,
)
from dubbo.status import (
    CancelledError,
    DeadlineExceededError,
    RpcError,
    SendStalledError,
    StatusCode,
    UnavailableError,
)

S, E = State, Event
LIVE = (S.OPEN, S.OPEN_PEER_DONE, S.REPLYING, S.REPLYING_PEER_DONE)
TERMINAL = (S.FINISHED, S.CANCELLED, S.REJECTED)
CT = "application/grpc+proto"

# Events the handler's thread, the timer or the reader may fire at any moment.
RESET_ERROR = CancelledError(StatusCode.CANCELLED, "Cancelled by the client")
LOST_ERROR = UnavailableError(StatusCode.UNAVAILABLE, "connection lost")
DEADLINE_ERROR = DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
STALLED_ERROR = SendStalledError(StatusCode.CANCELLED, "the peer read nothing for 1s")
BAD_ERROR = RpcError(StatusCode.INTERNAL, "request stream ended inside a message")
LOCAL_ERROR = CancelledError(StatusCode.CANCELLED, "Cancelled by the server")
END_NOW_ERRORS = {E.DEADLINE: DEADLINE_ERROR, E.SEND_STALLED: STALLED_ERROR,
                  E.BAD_INPUT: BAD_ERROR}


def stream_in(state: State) -> ServerStream:
    """A stream brought to ``state`` the way a call gets there."""
    stream = ServerStream(1)
    steps: dict[State, list[Callable[[ServerStream], object]]] = {
        S.IDLE: [],
        S.OPEN: [lambda s: s.accept(CT)],
        S.OPEN_PEER_DONE: [lambda s: s.accept(CT), ServerStream.peer_end],
        S.REPLYING: [lambda s: s.accept(CT), ServerStream.send_message],
        S.REPLYING_PEER_DONE: [lambda s: s.accept(CT), ServerStream.send_message,
                               ServerStream.peer_end],
        S.FINISHED: [lambda s: s.accept(CT), lambda s: s.finish(StatusCode.OK)],
        S.CANCELLED: [lambda s: s.accept(CT), lambda s: s.peer_reset(RESET_ERROR)],
        S.REJECTED: [ServerStream.refuse],
    }
    for step in steps[state]:
        step(stream)
    assert stream.state is state
    return stream


def fire(stream: ServerStream, event: Event) -> Send | None:
    """Apply ``event`` through the method the server calls for it."""
    if event is E.ACCEPT:
        stream.accept(CT)
        return None
    if event is E.REJECT:
        return stream.reject(StatusCode.UNIMPLEMENTED, "Method not found: /x/y")
    if event is E.REFUSE:
        return stream.refuse()
    if event is E.DATA:
        stream.receive_data()
        return None
    if event is E.PEER_END:
        stream.peer_end()
        return None
    if event is E.PEER_RESET:
        stream.peer_reset(RESET_ERROR)
        return None
    if event is E.LOST:
        stream.lost(LOST_ERROR)
        return None
    if event is E.SEND_HEADERS:
        return stream.send_headers([("k", "v")])
    if event is E.SEND_MESSAGE:
        return stream.send_message()
    if event is E.FINISH:
        return stream.finish(StatusCode.OK, "", [("t", "1")])
    if event is E.SENT_END:
        return stream.sent_end()
    if event in END_NOW_ERRORS:
        return stream.end_now(event, END_NOW_ERRORS[event])
    assert event is E.CANCEL_LOCALLY
    return stream.cancel_locally(LOCAL_ERROR)


def names(headers: list[tuple[str, str]] | None) -> list[str]:
    return [name for name, _ in headers or ()]


def check_emitted(send: Send | None, emit: Emit, reset: int | None) -> None:
    if emit is Emit.NOTHING:
        assert not send
        return
    assert send is not None
    assert send.reset == reset
    if emit is Emit.RESET:
        assert send.headers is None
    elif emit is Emit.HEADERS:
        assert names(send.headers)[:2] == [":status", "content-type"]
        assert "grpc-status" not in names(send.headers) and not send.end_stream
    elif emit is Emit.STATUS:  # trailers after headers: no :status
        assert names(send.headers)[0] == "grpc-status" and send.end_stream
    else:
        assert emit is Emit.STATUS_ONLY
        assert names(send.headers)[:3] == [":status", "content-type", "grpc-status"]
        assert send.end_stream


VALID = sorted(TRANSITIONS, key=lambda pair: (int(pair[0]), int(pair[1])))
INVALID = [(s, e) for s in State for e in Event if (s, e) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), VALID,
                         ids=[f"{s.name}-{e.name}" for s, e in VALID])
def test_every_transition_of_the_table(state, event):
    to, emit, reset = TRANSITIONS[state, event]
    stream = stream_in(state)
    if emit is Emit.RAISE:
        with pytest.raises(RpcError) as raised:
            fire(stream, event)
        assert raised.value is stream.cancel_error
    else:
        check_emitted(fire(stream, event), emit, reset)
    assert stream.state is to


@pytest.mark.parametrize(("state", "event"), INVALID,
                         ids=[f"{s.name}-{e.name}" for s, e in INVALID])
def test_every_pair_outside_the_table_is_refused(state, event):
    stream = stream_in(state)
    with pytest.raises(InvalidTransition) as raised:
        fire(stream, event)
    assert (raised.value.state, raised.value.event) == (state, event)
    assert event.name in str(raised.value) or "already" in str(raised.value) or \
        "no response headers" in str(raised.value)
    assert stream.state is state  # nothing changed


def test_the_table_covers_what_can_happen_at_any_moment():
    # The client and the connection act when they like: a reset or a lost connection
    # must be legal in every state, or the reader thread would raise on a race.
    for state in State:
        assert (state, E.PEER_RESET) in TRANSITIONS
        assert (state, E.LOST) in TRANSITIONS
    # Every way the server ends a running call is legal while it runs and after.
    for state in (*LIVE, S.FINISHED, S.CANCELLED):
        for event in (E.FINISH, E.DEADLINE, E.SEND_STALLED, E.BAD_INPUT, E.CANCEL_LOCALLY):
            assert (state, event) in TRANSITIONS
    # Terminal states are never left.
    for (state, _event), (to, _emit, _reset) in TRANSITIONS.items():
        if state in TERMINAL:
            assert to is state


# -- what a client sees ------------------------------------------------------------


def test_finish_before_any_reply_is_a_trailers_only_response():
    stream = stream_in(S.OPEN_PEER_DONE)
    send = stream.finish(StatusCode.NOT_FOUND, "no such user", [("why", "gone")])
    assert send.headers == [(":status", "200"), ("content-type", CT), ("grpc-status", "5"),
                            ("grpc-message", "no such user"), ("why", "gone")]
    assert send.end_stream and send.reset is None
    assert stream.state is S.FINISHED and stream.cancel_error is None


def test_finish_to_a_client_still_sending_resets_it_with_no_error():
    stream = stream_in(S.REPLYING)
    send = stream.finish(StatusCode.OK)
    assert send.headers == [("grpc-status", "0")] and send.end_stream
    assert send.reset == NO_ERROR  # grpc "Early Server Closure"


def test_first_reply_carries_the_headers_later_ones_nothing():
    stream = stream_in(S.OPEN)
    first = stream.send_message([("a", "1")], "gzip", "gzip,identity")
    assert first.headers == [(":status", "200"), ("content-type", CT),
                             ("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip,identity"),
                             ("a", "1")]
    assert stream.send_message() is NOTHING
    assert stream.replying


@pytest.mark.parametrize("state, headers_sent, reset", [
    (S.OPEN, False, NO_ERROR),  # the client may still send: stop it after our status
    (S.OPEN_PEER_DONE, False, None),
    (S.REPLYING, True, NO_ERROR),  # send_initial_metadata() first: no second headers
    (S.REPLYING_PEER_DONE, True, None),
])
def test_a_whole_reply_is_send_message_then_sent_end(state, headers_sent, reset):
    # What the unary fast path sends in one write equals the two steps it stands for.
    whole, steps = stream_in(state), stream_in(state)
    headers, block, rst = whole.reply_whole(StatusCode.OK, "", (), "gzip", "gzip,identity",
                                            [("t", "1")])
    expected = steps.send_message((), "gzip", "gzip,identity")
    expected_block = steps.status_trailers(StatusCode.OK, "", [("t", "1")])
    assert headers == expected.headers
    assert (headers is None) is headers_sent
    assert block == expected_block == [("grpc-status", "0"), ("t", "1")]
    assert rst == steps.sent_end().reset == reset
    assert whole.state is steps.state is S.FINISHED
    assert whole.status == (StatusCode.OK, "")


def test_a_whole_reply_on_a_cancelled_call_raises_and_sends_nothing():
    stream = stream_in(S.OPEN)
    stream.peer_reset(RESET_ERROR)
    with pytest.raises(CancelledError):
        stream.reply_whole(StatusCode.OK)
    assert stream.state is S.CANCELLED and stream.status == (StatusCode.CANCELLED,
                                                             "Cancelled by the client")


def test_initial_metadata_twice_is_a_runtime_error():
    stream = stream_in(S.OPEN)
    stream.send_headers([("a", "1")])
    with pytest.raises(RuntimeError, match="initial metadata already sent"):
        stream.send_headers([("a", "2")])


def test_reject_answers_with_the_http_status_and_stops_the_body():
    stream = ServerStream(3)
    send = stream.reject(StatusCode.INTERNAL, "bad content-type", http_status=415,
                         content_type="text/plain")
    assert send.headers[:3] == [(":status", "415"), ("content-type", "text/plain"),
                                ("grpc-status", "13")]
    assert send.end_stream and send.reset == NO_ERROR
    assert ServerStream(5).refuse() == Send(reset=REFUSED_STREAM)


def test_end_now_takes_only_the_ends_decided_while_running():
    with pytest.raises(ValueError):
        stream_in(S.OPEN).end_now(E.FINISH, BAD_ERROR)


def test_bad_input_after_the_client_ended_sends_no_reset():
    stream = stream_in(S.OPEN_PEER_DONE)
    send = stream.end_now(E.BAD_INPUT, BAD_ERROR)
    assert ("grpc-status", "13") in send.headers and send.reset is None
    assert stream.cancel_error is BAD_ERROR


# -- races ---------------------------------------------------------------------------


def test_request_and_its_reset_in_one_read_never_start():
    # The connection sees RequestReceived and StreamReset in one read: the call is
    # never started and nothing is answered.
    stream = ServerStream(1)
    assert stream.peer_reset(RESET_ERROR) is False  # no call was running
    assert stream.state is S.REJECTED and stream.cancel_error is None
    with pytest.raises(InvalidTransition):
        stream.accept(CT)


def test_request_rejected_then_its_reset_from_the_same_read():
    # The reject went to h2 (which may refuse it: the transport drops that), then
    # the reset of the same read arrives: nothing more happens.
    stream = ServerStream(1)
    assert stream.reject(StatusCode.UNIMPLEMENTED, "no").end_stream
    assert stream.peer_reset(RESET_ERROR) is False
    stream.receive_data()  # its body, still arriving, is dropped
    assert stream.state is S.REJECTED


def test_cancel_while_a_send_is_blocked():
    # The worker waits in send_data for window; the client resets the stream.
    stream = stream_in(S.REPLYING)
    assert stream.peer_reset(RESET_ERROR) is True
    # send_data's check, done under the lock on each wake-up, now fails the send...
    assert stream.cancel_error is RESET_ERROR
    # ...the handler ends with the error, which sends nothing...
    assert stream.finish(StatusCode.CANCELLED, "Cancelled by the client") is NOTHING
    # ...and its next reply raises what cancelled it.
    with pytest.raises(CancelledError):
        stream.send_message()
    # A second cancel (the connection goes too) keeps the first reason.
    assert stream.lost(LOST_ERROR) is False and stream.cancel_error is RESET_ERROR


def test_cancel_after_the_blocked_send_pushed_our_trailers():
    # The send pushed the reply and trailers, then a reset/deadline came before it
    # returned: our end still tells a client still sending to stop (the transport
    # drops the reset when the stream is closed already).
    stream = stream_in(S.REPLYING)
    stream.peer_reset(RESET_ERROR)
    assert stream.sent_end() == Send(reset=NO_ERROR)
    assert stream.state is S.CANCELLED


def test_deadline_during_a_send():
    stream = stream_in(S.REPLYING)
    send = stream.end_now(E.DEADLINE, DEADLINE_ERROR, [("trace", "x")])
    # The status goes out at once, as trailers (headers went out), then RST CANCEL.
    assert send.headers == [("grpc-status", "4"), ("grpc-message", "Deadline Exceeded"),
                            ("trace", "x")]
    assert send.end_stream and send.reset == CANCEL
    # The blocked send wakes up to this error; the handler's own finish sends nothing.
    assert stream.cancel_error is DEADLINE_ERROR
    assert stream.finish(StatusCode.DEADLINE_EXCEEDED) is NOTHING
    with pytest.raises(DeadlineExceededError):
        stream.send_message()
    # The send stalling too, or the timer firing twice, changes nothing.
    assert stream.end_now(E.SEND_STALLED, STALLED_ERROR) is NOTHING
    assert stream.cancel_error is DEADLINE_ERROR


def test_deadline_before_any_reply_is_trailers_only():
    stream = stream_in(S.OPEN)
    send = stream.end_now(E.DEADLINE, DEADLINE_ERROR)
    assert send.headers[:3] == [(":status", "200"), ("content-type", CT), ("grpc-status", "4")]
    assert send.reset == CANCEL


def test_reset_after_we_finished():
    stream = stream_in(S.REPLYING)
    assert stream.finish(StatusCode.OK).end_stream
    assert stream.peer_reset(RESET_ERROR) is False
    assert stream.state is S.FINISHED and stream.cancel_error is None
    # Nor do a late deadline, a stop or a second finish send anything.
    assert stream.end_now(E.DEADLINE, DEADLINE_ERROR) is NOTHING
    assert stream.cancel_locally(LOCAL_ERROR) is NOTHING
    assert stream.finish(StatusCode.INTERNAL) is NOTHING


def test_stop_resets_a_call_cancelled_without_telling_the_client():
    # A client's GOAWAY with an error cancels its calls without a reset; the stop
    # that follows resets what h2 still has open.
    stream = stream_in(S.REPLYING)
    assert stream.lost(LOST_ERROR) is True
    assert stream.cancel_locally(LOCAL_ERROR) == Send(reset=CANCEL)
    assert stream.cancel_error is LOST_ERROR


# -- invariants over any sequence ------------------------------------------------------

ANY_TIME = [E.DATA, E.PEER_END, E.PEER_RESET, E.LOST, E.SEND_HEADERS, E.SEND_MESSAGE,
            E.FINISH, E.SENT_END, E.DEADLINE, E.SEND_STALLED, E.BAD_INPUT, E.CANCEL_LOCALLY]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ANY_TIME), max_size=12))
def test_one_header_block_and_one_status_per_call(events):
    stream = stream_in(S.OPEN)
    headers_sent = status_sent = 0
    for event in events:
        before = stream.state
        try:
            send = fire(stream, event)
        except (InvalidTransition, RpcError):
            assert stream.state is before
            continue
        if before in TERMINAL:
            assert stream.state is before  # never left
        if send and send.headers is not None:
            assert not status_sent  # nothing after the status
            if send.end_stream:
                status_sent += 1
            else:
                headers_sent += 1
    assert headers_sent <= 1 and status_sent <= 1
