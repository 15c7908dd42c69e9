"""Pins every behaviour of h2's, hpack's and hyperframe's private parts that
dubbo/transport/h2_internals.py relies on, sans-I/O (no socket, no thread).

An h2/hpack/hyperframe upgrade that changes one of them fails here, with a message
naming what changed, rather than in a call. Each test drives our ``Connection``
against a plain h2 peer, byte for byte.
"""

from __future__ import annotations

import configparser
import functools
import importlib.metadata
import pathlib
import re

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import hpack
import pytest
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dubbo.transport import h2_internals
from dubbo.transport.connection import (
    CONNECTION_WINDOW,
    MAX_FRAME_SIZE,
    STREAM_WINDOW,
    new_h2_connection,
)
from dubbo.transport.h2_internals import Connection, resize_pending
from dubbo.transport.hpack_cache import CachingDecoder, CachingEncoder

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/s/M"),
           (b":authority", b"x"), (b"content-type", b"application/grpc")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]


def _changed(what: str) -> str:
    return (f"h2/hpack changed {what}: dubbo/transport/h2_internals.py relies on it; "
            "adapt it and the pins in setup.cfg")


def _server(max_concurrent_streams: int | None = None, checks: bool = True) -> Connection:
    config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                       validate_outbound_headers=checks,
                                       normalize_outbound_headers=checks)
    conn = new_h2_connection(config, 64 * 1024, max_concurrent_streams)
    conn.initiate_connection()
    return conn


def _pair(max_concurrent_streams: int | None = None
          ) -> tuple[Connection, h2.connection.H2Connection]:
    """Our server connection and a plain h2 client, prefaces exchanged."""
    server = _server(max_concurrent_streams)
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # the client's SETTINGS ack
    return server, client


def _frames(data: bytes) -> list[Frame]:
    frames = []
    view = memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9:9 + length])
        frames.append(frame)
        view = view[9 + length:]
    return frames


def _open(server: Connection, client: h2.connection.H2Connection,
          stream_id: int = 1) -> list[h2.events.Event]:
    client.send_headers(stream_id, REQUEST)
    return server.receive_data(client.data_to_send())


# -- versions ------------------------------------------------------------------------


def test_installed_h2_hpack_and_hyperframe_are_within_the_pinned_ranges():
    setup = configparser.ConfigParser()
    setup.read(pathlib.Path(__file__).parent.parent / "setup.cfg")
    requires = setup["options"]["install_requires"]
    for name in ("h2", "hpack", "hyperframe"):
        match = re.search(rf"^\s*{name}>=([\d.]+),<([\d.]+)\s*$", requires, re.M)
        assert match, f"setup.cfg must pin {name} to the range tests/test_h2_internals.py passed on"
        low, high = (tuple(map(int, v.split("."))) for v in match.groups())
        installed = tuple(map(int, importlib.metadata.version(name).split(".")[:len(high)]))
        assert low[:len(installed)] <= installed < high, (
            f"{name} {importlib.metadata.version(name)} is outside the pinned range: "
            "run tests/test_h2_internals.py and move the pin if it passes")


# -- h2: receiving frames ------------------------------------------------------------


def test_receive_data_hands_each_frame_to_receive_frame_via_the_dispatch_table():
    server, client = _pair()
    table = server._frame_dispatch_table
    for frame_type in (HeadersFrame, DataFrame, RstStreamFrame, GoAwayFrame, SettingsFrame):
        assert frame_type in table, _changed(f"_frame_dispatch_table (no {frame_type.__name__})")
    seen: list[type] = []
    original = server._receive_frame
    server._receive_frame = lambda frame: seen.append(type(frame)) or original(frame)
    events = _open(server, client)
    assert seen == [HeadersFrame], _changed("receive_data (no longer calls _receive_frame)")
    assert [type(e) for e in events] == [h2.events.RequestReceived]


def test_our_receive_frame_never_formats_a_frame(monkeypatch):
    """The reason to re-implement ``_receive_frame``: h2's formats ``repr(frame)``, a
    hex dump of the payload, for every frame even with logging off."""
    server, client = _pair()
    _open(server, client)

    def no_repr(self):
        raise AssertionError("repr(frame) on the receive path")

    monkeypatch.setattr(DataFrame, "__repr__", no_repr)
    client.send_data(1, b"x" * 1000)
    events = server.receive_data(client.data_to_send())
    assert [type(e) for e in events] == [h2.events.DataReceived]


def test_data_on_a_stream_we_reset_is_answered_with_rst_stream_not_goaway():
    server, client = _pair()
    _open(server, client)
    server.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    server.data_to_send()
    client.send_data(1, b"late")  # in flight before the client read our reset
    events = server.receive_data(client.data_to_send())
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    frames = _frames(server.data_to_send())
    assert [type(f) for f in frames] == [RstStreamFrame], _changed(
        "StreamClosedError / _stream_is_closed_by_reset / _prepare_for_sending")
    assert frames[0].error_code == h2.errors.ErrorCodes.STREAM_CLOSED


def test_data_on_a_reset_stream_h2_forgot_is_still_a_stream_error():
    server, client = _pair()
    _open(server, client)
    server.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    server.data_to_send()
    assert server.count_open_inbound() == 0  # purges the closed stream from h2's table
    assert 1 not in server.streams, _changed("_open_streams (no longer purges)")
    client.send_data(1, b"late")
    server.receive_data(client.data_to_send())  # StreamIDTooLowError inside: no raise
    frames = _frames(server.data_to_send())
    assert [type(f) for f in frames] == [RstStreamFrame]
    assert frames[0].error_code == h2.errors.ErrorCodes.STREAM_CLOSED


def _headers_frame(client: h2.connection.H2Connection, stream_id: int,
                   headers: list[tuple[bytes, bytes]]) -> bytes:
    """A HEADERS frame coded with the client's encoder, which h2 itself would not send."""
    frame = HeadersFrame(stream_id)
    frame.data = client.encoder.encode(headers)
    frame.flags.add("END_HEADERS")
    frame.flags.add("END_STREAM")
    return frame.serialize()


def test_headers_on_a_reset_stream_h2_forgot_are_answered_with_rst_stream():
    """Our ``_receive_frame``'s StreamIDTooLowError branch."""
    server, client = _pair()
    _open(server, client)
    server.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    server.data_to_send()
    server.count_open_inbound()  # h2 forgets the stream
    events = server.receive_data(_headers_frame(client, 1, [(b"grpc-status", b"0")]))
    assert events == []
    frames = _frames(server.data_to_send())
    assert [type(f) for f in frames] == [RstStreamFrame], _changed(
        "StreamIDTooLowError for a forgotten stream")
    assert frames[0].error_code == h2.errors.ErrorCodes.STREAM_CLOSED


def test_headers_on_a_stream_both_sides_ended_are_a_connection_error():
    server, client = _pair()
    client.send_headers(1, REQUEST, end_stream=True)
    server.receive_data(client.data_to_send())
    server.send_headers(1, RESPONSE, end_stream=True)
    server.count_open_inbound()  # h2 forgets the stream
    with pytest.raises(h2.exceptions.StreamClosedError):
        server.receive_data(_headers_frame(client, 1, [(b"x-late", b"1")]))


# -- h2: stream limits ---------------------------------------------------------------


def test_streams_over_our_limit_are_left_to_us_when_we_say_so():
    server, client = _pair(max_concurrent_streams=1)
    server.streams_limited_by_us = True
    # A peer that opens streams before it read our limit (h2 would refuse to).
    first = server.receive_data(_headers_frame(client, 1, REQUEST))
    second = server.receive_data(_headers_frame(client, 3, REQUEST))
    assert [type(e) for e in first + second] == [h2.events.RequestReceived,
                                                 h2.events.StreamEnded] * 2, \
        _changed("_receive_headers_frame (no longer reads open_inbound_streams)")
    # Half-closed (remote) streams are open: the count the server refuses by.
    assert server.count_open_inbound() == 2
    assert server.count_open_inbound(before=3) == 1


def test_streams_over_our_limit_end_the_connection_in_h2_itself():
    """The other half of the pin above: h2 counts through ``open_inbound_streams``."""
    server, client = _pair(max_concurrent_streams=1)
    server.receive_data(_headers_frame(client, 1, REQUEST))
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        server.receive_data(_headers_frame(client, 3, REQUEST))


def test_sending_open_follows_the_stream_state():
    server, client = _pair()
    _open(server, client)
    assert server.sending_open(1)
    server.send_headers(1, RESPONSE, end_stream=True)
    client.send_data(1, b"", end_stream=True)
    server.receive_data(client.data_to_send())
    assert not server.sending_open(1)
    assert not server.sending_open(99)


# -- h2: GOAWAY ----------------------------------------------------------------------


def test_streams_run_on_after_a_goaway_is_received():
    server, client = _pair()
    _open(server, client)
    client.close_connection(h2.errors.ErrorCodes.NO_ERROR, last_stream_id=0)
    events = server.receive_data(client.data_to_send())
    assert [type(e) for e in events] == [h2.events.ConnectionTerminated]
    server.send_headers(1, RESPONSE)  # h2 alone raises ProtocolError: connection closed
    server.send_data(1, b"reply", end_stream=True)
    assert _frames(server.data_to_send())[-1].data == b"reply"


def test_send_goaway_names_the_last_stream_and_keeps_the_connection():
    server, client = _pair()
    _open(server, client)
    server.data_to_send()
    server.send_goaway(h2.errors.ErrorCodes.NO_ERROR, last_stream_id=1)
    (goaway,) = _frames(server.data_to_send())
    assert isinstance(goaway, GoAwayFrame) and goaway.last_stream_id == 1
    server.send_headers(1, RESPONSE, end_stream=True)  # still open for stream 1
    client.send_data(1, b"more")
    server.receive_data(client.data_to_send())  # and still reading


# -- h2: settings, buffers, coders ---------------------------------------------------


def test_our_settings_are_in_the_preface_and_in_force_before_the_ack():
    server = _server(max_concurrent_streams=7)
    server.increment_flow_control_window(CONNECTION_WINDOW - 65535)  # as H2Transport does
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    events = client.receive_data(server.data_to_send())
    (changed,) = [e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)]
    values = {code: s.new_value for code, s in changed.changed_settings.items()}
    assert values[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == STREAM_WINDOW
    assert values[h2.settings.SettingCodes.MAX_FRAME_SIZE] == MAX_FRAME_SIZE
    assert values[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7
    # A full-size frame in the same read as the client's preface, before our
    # SETTINGS are acknowledged, is accepted.
    client.send_headers(1, REQUEST)
    frame = DataFrame(1)
    frame.data = b"\0" * MAX_FRAME_SIZE
    events = server.receive_data(client.data_to_send() + frame.serialize())
    assert [type(e) for e in events][-1] is h2.events.DataReceived


def test_has_output_tracks_what_h2_holds_to_send():
    server = _server()
    assert server.has_output(), _changed("_data_to_send")
    server.data_to_send()
    assert not server.has_output()
    server.ping(b"12345678")
    assert server.has_output()


def test_h2_codes_headers_with_the_coders_we_give_it():
    server, client = _pair()
    assert isinstance(server.encoder, CachingEncoder) and \
        isinstance(server.decoder, CachingDecoder)
    decoded: list[bytes] = []
    decode = server.decoder.decode
    server.decoder.decode = lambda data, raw=False: decoded.append(bytes(data)) or \
        decode(data, raw)
    encoded: list[object] = []
    encode = server.encoder.encode
    server.encoder.encode = lambda headers, huffman=True: encoded.append(headers) or \
        encode(headers, huffman)
    _open(server, client)
    server.send_headers(1, RESPONSE)
    assert decoded and encoded, _changed("how H2Connection uses .encoder/.decoder")


def test_the_frame_buffer_is_ours_and_keeps_a_split_header_block_whole():
    server, client = _pair()
    assert isinstance(server.incoming_buffer, h2_internals.GuardedFrameBuffer)
    for name in ("_data", "_headers_buffer", "max_frame_size"):
        assert hasattr(server.incoming_buffer, name), _changed(f"FrameBuffer.{name}")
    client.send_headers(1, REQUEST)
    block = _frames(client.data_to_send())[0].data
    first = HeadersFrame(1)
    first.data = block[:3]
    rest = ContinuationFrame(1)
    rest.data = block[3:]
    rest.flags.add("END_HEADERS")
    events = server.receive_data(first.serialize() + rest.serialize())
    assert [type(e) for e in events] == [h2.events.RequestReceived]
    assert server.incoming_buffer._header_block_size == len(block)


# -- hpack ---------------------------------------------------------------------------


def test_hpack_changes_its_table_only_through_add_and_maxsize():
    encoder = hpack.Encoder()
    decoder = hpack.Decoder()
    enc_table = h2_internals.install_versioned_table(encoder)
    dec_table = h2_internals.install_versioned_table(decoder)
    assert encoder.header_table is enc_table, _changed("Encoder.header_table")
    block = encoder.encode([(b"x-new", b"1")])
    assert enc_table.version == 1 and len(enc_table.dynamic_entries) == 1, \
        _changed("HeaderTable.add")
    decoder.decode(block)
    assert dec_table.version == 1 and len(dec_table.dynamic_entries) == 1
    before = len(block)
    assert len(encoder.encode([(b"x-new", b"1")])) < before  # indexed now
    assert enc_table.version == 1  # no change for a block already in the table

    encoder.header_table_size = 1024
    assert enc_table.version == 2 and resize_pending(enc_table), \
        _changed("HeaderTable.maxsize / .resized")
    block = encoder.encode([(b"x-new", b"1")])
    assert not resize_pending(enc_table), _changed("Encoder clearing .resized")
    decoder.decode(block)  # carries the size update
    assert dec_table.version >= 2 and dec_table.maxsize == 1024, \
        _changed("Decoder applying a size update through HeaderTable.maxsize")


# -- large DATA frames without copies (issue 11) --------------------------------------


def test_a_large_data_frame_goes_out_as_a_view_of_the_message_with_h2s_bytes():
    server, client = _pair()
    client.send_headers(1, REQUEST, end_stream=True)
    server.receive_data(client.data_to_send())
    server.send_headers(1, RESPONSE)
    message = bytes(range(256)) * 128 + b"m" * 100  # the plain peer takes 16 KiB frames
    view = memoryview(message)
    server.send_data(1, view[:16384])
    server.send_data(1, view[16384:16484])  # small: into h2's buffer as before
    server.send_data(1, view[16484:], end_stream=True)
    parts = server.take_output()
    assert not server.has_output() and server.take_output() == []
    assert any(isinstance(p, memoryview) and p.obj is message for p in parts), \
        _changed("how send_data hands DataFrames to _prepare_for_sending")
    frames = _frames(b"".join(parts))
    assert [type(f) for f in frames] == [HeadersFrame, DataFrame, DataFrame, DataFrame]
    assert b"".join(f.data for f in frames[1:]) == message
    assert "END_STREAM" in frames[-1].flags and "END_STREAM" not in frames[1].flags
    events = client.receive_data(b"".join(parts))
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == message
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)


def test_data_to_send_still_returns_everything_in_order():
    server, client = _pair()
    client.send_headers(1, REQUEST, end_stream=True)
    server.receive_data(client.data_to_send())
    server.send_headers(1, RESPONSE)
    server.send_data(1, b"a" * 16384)
    server.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    frames = _frames(server.data_to_send())
    assert [type(f) for f in frames] == [HeadersFrame, DataFrame, HeadersFrame]
    assert frames[1].data == b"a" * 16384


def test_a_data_frame_is_parsed_from_the_buffer_and_the_buffer_released():
    server, client = _pair()
    client.send_headers(1, REQUEST)
    client.send_data(1, b"b" * 16384)
    client.send_data(1, b"b" * 13616, end_stream=True)
    wire = client.data_to_send()
    events = []
    for start in range(0, len(wire), 7000):  # split across reads, mid-header too
        events += server.receive_data(wire[start:start + 7000])
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data == b"b" * 30000
    assert not server.incoming_buffer._data, _changed("FrameBuffer._data")
    # PADDED, pad length 10 in a 5-byte body: hyperframe's error, as h2's ProtocolError
    bad = b"\x00\x00\x05\x00\x08\x00\x00\x00\x03" + b"\x0a" + b"x" * 4
    with pytest.raises(h2.exceptions.ProtocolError):
        server.receive_data(bad)


# -- the lean frame parser (issue 11): the frames and errors of h2's own ----------------


def _frame_bytes(frame_type: int, flags: int, stream_id: int, body: bytes) -> bytes:
    return (len(body).to_bytes(3, "big") + bytes([frame_type, flags])
            + stream_id.to_bytes(4, "big") + body)


def _describe(frame: Frame) -> tuple[object, ...]:
    attrs = {k: v for k, v in vars(frame).items() if k != "flags"}
    return (type(frame), sorted(frame.flags), attrs)


def _run(buffer: FrameBuffer, wire: bytes, cuts: list[int]) -> list[object]:
    """What a frame buffer yields for ``wire`` fed in pieces: frames, then the error
    (type and message) or what is left buffered."""
    seen: list[object] = []
    start = 0
    for end in [*sorted(cuts), len(wire)]:
        buffer.add_data(wire[start:end])
        start = max(start, end)
        try:
            seen.extend(_describe(frame) for frame in buffer)
        except Exception as exc:  # noqa: BLE001  # compared, type and message
            return [*seen, (type(exc), str(exc))]
    return [*seen, bytes(buffer._data), len(buffer._headers_buffer)]


_FRAME = st.tuples(
    st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x0c, 0xfe]),  # all + unknown
    st.sampled_from([0, 1, 4, 5, 8, 9, 0x20, 0x24, 0x25, 0x2d, 0xff]),
    st.sampled_from([0, 1, 2, 3, 0x80000001]),
    st.sampled_from([0, 1, 3, 4, 5, 6, 7, 8, 9, 12, 40, 1100]).flatmap(
        lambda n: st.binary(min_size=n, max_size=n)),
)


@settings(max_examples=400, deadline=None)
@given(frames=st.lists(_FRAME, max_size=6), garbage=st.binary(max_size=12),
       cuts=st.lists(st.integers(0, 2400), max_size=4))
def test_the_lean_parser_yields_what_h2s_frame_buffer_yields(frames, garbage, cuts):
    """Same frames (class, flags, every attribute), same errors with the same
    messages, same bytes left over, for any sequence of frames, split anywhere."""
    wire = b"".join(_frame_bytes(*frame) for frame in frames) + garbage
    stock = FrameBuffer(server=False)
    ours = h2_internals.GuardedFrameBuffer(False, max_header_block=10**7)
    stock.max_frame_size = ours.max_frame_size = 2**24 - 1
    assert _run(ours, wire, cuts) == _run(stock, wire, cuts)


@pytest.mark.parametrize("frame", [
    (0, 0, 1, b"abc"), (0, 1, 3, b"x" * 2000), (0, 8, 1, b"\x02abcd"),  # DATA
    (1, 4, 1, b"\x82"), (1, 0x25, 1, b"\x00\x00\x00\x03\x10\x82"),  # HEADERS
    (1, 0x2d, 1, b"\x01\x00\x00\x00\x03\x10\x82\x00"), (9, 4, 1, b"\x82"),
    (4, 0, 0, b"\x00\x04\x00\x01\x00\x00"), (4, 1, 0, b""),  # SETTINGS
    (6, 0, 0, b"12345678"), (6, 1, 0, b"87654321"),  # PING
    (8, 0, 0, b"\x00\x00\x10\x00"), (8, 0, 3, b"\x00\x00\x00\x01"),  # WINDOW_UPDATE
    (3, 0, 1, b"\x00\x00\x00\x08"),  # RST_STREAM
    (0, 0, 0, b""), (6, 0, 1, b"12345678"), (8, 0, 0, b"\x00\x00\x00\x00"),  # errors
    (0, 8, 1, b"\x09abc"), (4, 1, 0, b"\x00\x04\x00\x01\x00\x00"), (6, 0, 0, b"123"),
])
def test_the_lean_parser_matches_h2_on_each_frame_type(frame):
    wire = _frame_bytes(*frame)
    if frame[0] == 1 and not frame[1] & 4:
        wire += _frame_bytes(9, 4, frame[2], b"\x84")
    stock = FrameBuffer(server=False)
    ours = h2_internals.GuardedFrameBuffer(False, max_header_block=10**7)
    stock.max_frame_size = ours.max_frame_size = 16384
    result = _run(ours, wire, [])
    assert result == _run(stock, wire, [])
    assert len(result) > 2 or isinstance(result[-1], tuple)  # a frame, or an error


def test_common_frames_skip_hyperframes_header_parser(monkeypatch):
    """The point of the lean parser: hyperframe's ``parse_frame_header`` and frame
    constructors are not run for HEADERS, DATA, SETTINGS, PING, WINDOW_UPDATE."""
    server, client = _pair()

    def refuse(*args, **kwargs):
        raise AssertionError("hyperframe's header parser on the receive path")

    client.send_headers(1, REQUEST)
    client.send_data(1, b"x" * 10, end_stream=True)
    client.ping(b"12345678")
    client.increment_flow_control_window(1000)
    wire = client.data_to_send()
    monkeypatch.setattr(Frame, "parse_frame_header", staticmethod(refuse))
    monkeypatch.setattr(HeadersFrame, "__init__", refuse)
    events = server.receive_data(wire)
    assert [type(e) for e in events] == [
        h2.events.RequestReceived, h2.events.DataReceived, h2.events.StreamEnded,
        h2.events.PingReceived, h2.events.WindowUpdated]


# -- HEADERS received without h2's header processing (issue 11) ----------------------

_BLOCKS = {
    "request": REQUEST,
    "response": RESPONSE,
    "trailers": [(b"grpc-status", b"0")],
    "informational": [(b":status", b"103")],
    "sized": [(b":status", b"200"), (b"content-length", b"3")],
    "bad-size": [(b":method", b"POST"), (b"content-length", b"x")],
}


def _production(client_side: bool, max_streams: int | None) -> Connection:
    """A connection configured as the transport configures its own."""
    config = h2.config.H2Configuration(
        client_side=client_side, header_encoding=None,
        validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False, normalize_inbound_headers=False)
    return new_h2_connection(config, 16384, max_streams)


def _replay(fast: bool, client_side: bool, limited: bool, ops: list[tuple]) -> list[object]:
    """Our connection fed a scripted peer's frames, with our HEADERS and DATA handlers
    or h2's:
    everything it does (events, bytes out, errors, stream states) as plain values."""
    conn = _production(client_side, 2 if not client_side else None)
    conn.streams_limited_by_us = limited
    if not fast:  # h2's own handlers
        table = conn._frame_dispatch_table
        table[HeadersFrame] = functools.partial(
            h2.connection.H2Connection._receive_headers_frame, conn)
        table[DataFrame] = functools.partial(h2.connection.H2Connection._receive_data_frame, conn)
    conn.initiate_connection()
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=not client_side))
    peer.initiate_connection()
    conn.receive_data(peer.data_to_send())
    conn.data_to_send()
    encoder = hpack.Encoder()
    seen: list[object] = []
    for op, stream_id, flag, kind in ops:
        try:
            if op == "send":  # our side opens or answers a stream
                conn.send_headers(stream_id, _BLOCKS["request" if client_side else "response"],
                                  end_stream=flag)
                seen.append(conn.data_to_send())
                continue
            if op == "headers":
                block = b"\xff\xff\xff\x7f" if kind == "garbage" else \
                    encoder.encode(_BLOCKS[kind])
                frame: Frame = HeadersFrame(stream_id, data=block)
                frame.flags.add("END_HEADERS")
                if flag:
                    frame.flags.add("END_STREAM")
                if kind == "request" and stream_id == 7:
                    frame.flags.add("PRIORITY")
                    frame.depends_on = 1
            elif op == "data":
                frame = DataFrame(stream_id, data=b"abc" * (kind == "sized" or 1000))
                if flag:
                    frame.flags.add("END_STREAM")
                if kind == "garbage":
                    frame.flags.add("PADDED")
                    frame.pad_length = 2
            else:
                frame = RstStreamFrame(stream_id, error_code=8)
            events = conn.receive_data(frame.serialize())
            seen.append(repr(events))
            seen.append(conn.data_to_send())
        except h2.exceptions.ProtocolError as exc:
            seen.append((type(exc), str(exc), conn.data_to_send()))
            break
    remainder = int(not client_side)
    for before in (3, 5, 9):  # our count of open streams is h2's H2Stream.open
        assert conn.count_open_inbound(before=before) == sum(
            1 for i, s in conn.streams.items() if i < before and i % 2 == remainder and s.open)
    seen.append({i: (s.state_machine.state, s.closed_by) for i, s in conn.streams.items()})
    seen.append((dict(conn._closed_streams), conn.highest_inbound_stream_id,
                 conn.state_machine.state, vars(conn._inbound_flow_control_window_manager),
                 {i: vars(s._inbound_window_manager) for i, s in conn.streams.items()}))
    return seen


_OP = st.tuples(st.sampled_from(["headers", "headers", "data", "rst", "send"]),
                st.sampled_from([1, 3, 5, 7, 2]), st.booleans(),
                st.sampled_from([*_BLOCKS, "garbage"]))


@settings(max_examples=300, deadline=None)
@given(client_side=st.booleans(), limited=st.booleans(), ops=st.lists(_OP, max_size=8))
@example(client_side=False, limited=True, ops=[  # a closed stream forgotten, then a new one
    ("headers", 1, True, "request"), ("rst", 1, False, ""), ("headers", 3, True, "request"),
    ("send", 3, True, ""), ("headers", 5, False, "request"), ("headers", 3, True, "request")])
@example(client_side=False, limited=True, ops=[  # padded DATA, DATA after END_STREAM
    ("headers", 1, False, "request"), ("data", 1, False, "garbage"), ("data", 1, True, ""),
    ("data", 1, False, "")])
@example(client_side=False, limited=False, ops=[  # DATA on OPEN, then on HALF_CLOSED_LOCAL
    ("headers", 1, False, "request"), ("data", 1, False, ""), ("send", 1, True, ""),
    ("data", 1, False, ""), ("data", 1, True, "")])
@example(client_side=True, limited=False, ops=[  # a response's DATA, then content-length
    ("send", 1, False, ""), ("headers", 1, False, "response"), ("data", 1, False, ""),
    ("send", 3, False, ""), ("headers", 3, False, "sized"), ("data", 3, False, "sized"),
    ("data", 3, False, "sized")])
def test_headers_and_data_received_the_short_way_do_what_h2_does(client_side, limited, ops):
    """Same events (every field), bytes sent, errors, stream states and windows as
    h2's own ``_receive_headers_frame`` and ``_receive_data_frame``, for any sequence
    of frames from the peer."""
    assert _replay(True, client_side, limited, ops) == _replay(False, client_side, limited, ops)


def test_headers_take_the_short_way_in_the_transports_configuration(monkeypatch):
    conn = _production(False, None)
    conn.streams_limited_by_us = True
    assert conn._plain_inbound_headers, _changed("H2Configuration's inbound header options")
    conn.initiate_connection()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, REQUEST, end_stream=True)
    monkeypatch.setattr(h2.stream.H2Stream, "receive_headers", None)  # not called
    events = conn.receive_data(client.data_to_send())
    assert [type(e) for e in events][-2:] == [h2.events.RequestReceived, h2.events.StreamEnded]
    assert events[-2].headers == REQUEST and events[-2].stream_ended is events[-1]


@pytest.mark.parametrize("wire", [
    b"\x00\x00\x05\x00\x08\x00\x00\x00\x01" + b"\x0a" + b"x" * 4,  # padding too long
    b"\x00\x00\x03\x06\x00\x00\x00\x00\x00" + b"abc",  # PING of 3 bytes
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00",  # DATA on stream 0
])
def test_receive_data_ends_the_connection_as_h2_does(wire):
    """Our ``receive_data``: the same ProtocolError and GOAWAY as h2's own."""
    stock = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None))
    stock.initiate_connection()
    stock.receive_data(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
    results = []
    for conn in (_pair()[0], stock):
        conn.data_to_send()
        with pytest.raises(h2.exceptions.ProtocolError) as err:
            conn.receive_data(wire)
        sent = [(type(f), vars(f).get("error_code")) for f in _frames(conn.data_to_send())]
        results.append((type(err.value), str(err.value), sent))
    assert results[0] == results[1]
    assert [kind for kind, _ in results[0][2]] == [GoAwayFrame]


def test_an_open_connection_takes_headers_and_data_as_it_is():
    """Why the short ways skip the connection state machine when it is open."""
    table = h2.connection.H2ConnectionStateMachine._transitions
    inputs = h2.connection.ConnectionInputs
    for state in h2_internals._CONNECTION_OPEN:
        for received in (inputs.RECV_HEADERS, inputs.RECV_DATA):
            assert table[(state, received)] == (None, state), _changed("connection states")
# -- sending without h2's frame objects (issue 11) -----------------------------------
# Connection.send_headers/send_data do the common cases themselves. Differentially:
# the same random sequences of sends, resets and peer frames go to our Connection and
# to one whose sends are h2's own; every step must raise the same error, leave the
# same h2 state and queue the same bytes.

def _reference(conn: Connection) -> Connection:
    """``conn`` with h2's own send_headers/send_data (the reference)."""
    conn.send_headers = (  # type: ignore[method-assign]
        lambda *a, **k: h2.connection.H2Connection.send_headers(conn, *a, **k))
    conn.send_data = (  # type: ignore[method-assign]
        lambda *a, **k: h2.connection.H2Connection.send_data(conn, *a, **k))
    return conn


def _h2_state(conn: Connection) -> tuple:
    streams = {}
    for stream_id, s in conn.streams.items():
        m = s.state_machine
        streams[stream_id] = (
            m.state, m.client, m.headers_sent, m.trailers_sent, m.headers_received,
            m.trailers_received, m.stream_closed_by, s.outbound_flow_control_window,
            s.inbound_flow_control_window, s.request_method, s._authority,
            s.max_outbound_frame_size, s._expected_content_length)
    table = conn.encoder.header_table
    return (conn.state_machine.state, streams, dict(conn._closed_streams),
            conn.highest_outbound_stream_id, conn.highest_inbound_stream_id,
            conn.outbound_flow_control_window, conn.inbound_flow_control_window,
            list(table.dynamic_entries), table.maxsize, table.resized)


def _outcome(fn, *args, **kwargs) -> str | None:
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


_S_REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/s.S/M"),
              (":authority", "h:1"), ("content-type", "application/grpc"), ("te", "trailers")]
_S_RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]


def _random_block(rng, side: str) -> object:
    choice = rng.randrange(14)
    if choice < 4:
        return list(_S_REQUEST if side == "client" else _S_RESPONSE)
    if choice < 6:
        return [("grpc-status", str(rng.randrange(3))), ("grpc-message", "m" * rng.randrange(3))]
    if choice == 6:
        return tuple(_S_RESPONSE if side == "client" else _S_REQUEST)
    if choice == 7:
        return [(b":status", b"100")] if rng.random() < 0.7 else [(":status", "103")]
    if choice == 8:  # past a 16 KiB frame: CONTINUATION frames
        return list(_S_RESPONSE) + [("x-big", "v" * rng.choice([16000, 17000, 40000]))]
    if choice == 9:
        return [(b":status", b"200"), (b"x-bytes", str(rng.random()).encode())]
    if choice == 10:
        return [(":status", "200"), hpack.NeverIndexedHeaderTuple("x-secret", "s")]
    if choice == 11:
        return [(":status", "200", True), ("x-triple", "t")]
    if choice == 12:
        return rng.choice([[], [(":status", 200)], iter(_S_RESPONSE), [[":status", "200"]]])
    return [(":method", "GET"), (":authority", f"a{rng.randrange(3)}"), (":path", "/")]


def _peer(side: str, settings: dict) -> h2.connection.H2Connection:
    peer = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=side == "server", header_encoding=None, validate_inbound_headers=False,
        validate_outbound_headers=False, normalize_inbound_headers=False))
    peer.local_settings = h2.settings.Settings(client=side == "server", initial_values=settings)
    peer.initiate_connection()
    return peer


@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("seed", range(8))
def test_our_sends_queue_h2s_bytes_and_leave_h2s_state(side, seed):
    import random

    rng = random.Random(seed)
    settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: rng.choice([0, 50, 70000]),
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: rng.choice([2, 100])}
    pairs = []
    for make in (lambda c: c, _reference):
        ours = make(new_h2_connection(h2.config.H2Configuration(
            client_side=side == "client", header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
            validate_inbound_headers=False, normalize_inbound_headers=False), 64 * 1024))
        ours.initiate_connection()
        peer = _peer(side, settings)
        pairs.append([ours, peer, False])  # ours, its peer, peer failed
    fast, ref = pairs[0][0], pairs[1][0]

    def deliver() -> None:
        sent = [b"".join(p[0].take_output()) for p in pairs]
        assert sent[0] == sent[1]
        for pair in pairs:
            if not pair[2] and sent[0]:
                pair[2] = _outcome(pair[1].receive_data, sent[0]) is not None

    def from_peers(op: str, *args) -> None:
        results, wires = [], []
        for _ours, peer, failed in pairs:
            results.append(None if failed else _outcome(getattr(peer, op), *args))
            wires.append(peer.data_to_send())
        assert results[0] == results[1] and wires[0] == wires[1]
        outcomes = [_outcome(p[0].receive_data, wires[0]) if wires[0] else None for p in pairs]
        assert outcomes[0] == outcomes[1]

    deliver()
    from_peers("ping", b"12345678")  # nothing: just the prefaces and SETTINGS
    deliver()
    from_peers("ping", b"12345678")
    count = 0
    for step in range(250):
        ids = sorted(set(fast.streams) | {fast.highest_outbound_stream_id or 1,
                                          fast.highest_inbound_stream_id or 2, 99})
        stream_id = rng.choice(ids)
        sending = [i for i, s in fast.streams.items() if s.open and not
                   s.state_machine.state == h2.stream.StreamState.HALF_CLOSED_LOCAL]
        sensible = rng.random() < 0.7
        if sensible and sending:
            stream_id = rng.choice(sending)
        elif stream_id not in fast.streams:
            sensible = False
        kind = rng.random()
        if kind < 0.3:
            block, end = _random_block(rng, side), rng.random() < 0.4
            if side == "client" and (rng.random() < 0.6 or sensible and not sending):
                stream_id = fast.get_next_available_stream_id()
            elif sensible and sending:  # a response, or trailers
                if fast.streams[stream_id].state_machine.headers_sent:
                    block, end = [("grpc-status", "0")], rng.random() < 0.9
                elif side == "server":
                    block = list(_S_RESPONSE)
            blocks = [block, block] if not hasattr(block, "__next__") else [
                iter(list(_S_RESPONSE)), iter(list(_S_RESPONSE))]
            got = [_outcome(c.send_headers, stream_id, b, end_stream=end)
                   for c, b in zip((fast, ref), blocks, strict=True)]
        elif kind < 0.6:
            if sensible and not fast.streams[stream_id].state_machine.headers_sent:
                stream_id = 99  # DATA before the response headers would end the peer
            size = rng.choice([0, 1, 20, 49, 100, 16384, 17000, 70000])
            payload = bytes(rng.getrandbits(8) for _ in range(8)) * (size // 8 + 1)
            payload = payload[:size]
            data = rng.choice([payload, memoryview(payload), bytearray(payload)])
            end = rng.random() < 0.3
            pad = rng.choice([None] * 8 + [0, 3])
            got = [_outcome(c.send_data, stream_id, data, end_stream=end, pad_length=pad)
                   for c in (fast, ref)]
        elif kind < 0.65:
            got = [_outcome(c.reset_stream, stream_id) for c in (fast, ref)]
        else:
            got = [None, None]
            deliver()
            action = rng.random()
            peer_ids = [s for s in pairs[0][1].streams] or [1]
            target = rng.choice(peer_ids)
            if action < 0.35 and side == "server":
                new_id = pairs[0][1].get_next_available_stream_id()
                from_peers("send_headers", new_id, REQUEST, rng.random() < 0.5)
            elif action < 0.4:
                from_peers("send_headers", target, RESPONSE if side == "client"
                           else [(b"x", b"y")], rng.random() < 0.5)
            elif action < 0.5:
                from_peers("end_stream", target)
            elif action < 0.6:
                from_peers("reset_stream", target)
            elif action < 0.8:
                from_peers("increment_flow_control_window", rng.choice([30, 5000, 70000]),
                           rng.choice([None, target]))
            else:
                from_peers("update_settings", {
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: rng.choice([0, 60, 90000]),
                    h2.settings.SettingCodes.MAX_FRAME_SIZE: rng.choice([16384, 20000])})
            deliver()
        assert got[0] == got[1], f"step {step}: {got}"
        count += got[0] is None
        assert _h2_state(fast) == _h2_state(ref), f"step {step}"
        if rng.random() < 0.5:
            deliver()
    deliver()
    assert count > 20  # most steps did something


@pytest.mark.parametrize("length", [1, 16383, 16384, 16385, 32768, 40000])
@pytest.mark.parametrize("end_stream", [False, True])
def test_a_header_block_is_framed_as_hyperframe_frames_it(length, end_stream):
    conn = _server()
    conn.take_output()
    block = bytes(range(256)) * (length // 256 + 1)
    block = block[:length]
    conn._queue_header_block(3, block, end_stream, 16384)
    frames = [HeadersFrame(3)] + [ContinuationFrame(3) for _ in range(1, -(-length // 16384))]
    for index, frame in enumerate(frames):
        frame.data = block[index * 16384 : (index + 1) * 16384]
    frames[-1].flags.add("END_HEADERS")
    if end_stream:
        frames[0].flags.add("END_STREAM")
    assert b"".join(conn.take_output()) == b"".join(f.serialize() for f in frames)


def test_a_unary_calls_frames_are_sent_without_h2s_frame_objects(monkeypatch):
    server = _server(checks=False)  # as H2Transport configures h2
    client = new_h2_connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False), 64 * 1024)
    client.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())

    def refuse(*args, **kwargs):
        raise AssertionError("an h2 frame object was built")

    monkeypatch.setattr(h2.stream, "HeadersFrame", refuse)
    monkeypatch.setattr(h2.stream, "DataFrame", refuse)
    # The first request (the client's connection leaves h2's IDLE state), trailers-only.
    client.send_headers(1, _S_REQUEST, end_stream=True)
    server.receive_data(b"".join(client.take_output()))
    server.send_headers(1, [(":status", "200"), ("grpc-status", "0")], end_stream=True)
    client.receive_data(b"".join(server.take_output()))
    assert client.state_machine.state is h2.connection.ConnectionState.CLIENT_OPEN
    client.send_headers(3, _S_REQUEST)
    client.send_data(3, b"\0\0\0\0\x01x", end_stream=True)
    events = server.receive_data(b"".join(client.take_output()))
    assert [type(e) for e in events][:2] == [h2.events.RequestReceived, h2.events.DataReceived]
    server.send_headers(3, _S_RESPONSE)
    server.send_data(3, memoryview(b"\0\0\0\0\x01y"))
    server.send_headers(3, [("grpc-status", "0")], end_stream=True)
    events = client.receive_data(b"".join(server.take_output()))
    assert [type(e) for e in events] == [h2.events.ResponseReceived, h2.events.DataReceived,
                                         h2.events.TrailersReceived, h2.events.StreamEnded]
    assert events[1].data == b"\0\0\0\0\x01y"
    assert client.streams[3].closed and server.streams[3].closed
# -- hpack table snapshots (hpack_first) ---------------------------------------------


def test_a_table_snapshot_put_into_a_fresh_coder_codes_as_the_original():
    blocks = [[(b":path", b"/a.B/C"), (b"x-one", b"1")], [(b"x-two", b"2" * 40)],
              [(b"x-one", b"1"), (b"x-three", b"3")]]
    original, copy = hpack.Encoder(), hpack.Encoder()
    table = h2_internals.install_versioned_table(original)
    fresh = h2_internals.install_versioned_table(copy)
    original.header_table_size = 200  # evictions, a smaller maxsize, a size update
    original.encode(blocks[0])
    original.encode(blocks[1])
    h2_internals.table_restore(fresh, h2_internals.table_snapshot(table))
    assert fresh.dynamic_entries == table.dynamic_entries and \
        fresh.maxsize == table.maxsize and fresh.version == table.version, \
        _changed("HeaderTable.dynamic_entries / _current_size / _maxsize")
    assert copy.encode(blocks[2]) == original.encode(blocks[2]), \
        _changed("what HeaderTable keeps of its state")
    assert list(fresh.dynamic_entries) == list(table.dynamic_entries)
    # A decoder given the snapshot of a decoder's table reads what follows alike.
    sender, reader, copy_reader = hpack.Encoder(), hpack.Decoder(), hpack.Decoder()
    reader_table = h2_internals.install_versioned_table(reader)
    copy_table = h2_internals.install_versioned_table(copy_reader)
    reader.decode(sender.encode(blocks[0]))
    h2_internals.table_restore(copy_table, h2_internals.table_snapshot(reader_table))
    follow = sender.encode(blocks[2])  # indexes entries the first block added
    assert copy_reader.decode(follow, raw=True) == reader.decode(follow, raw=True)


# -- connections cloned from a template (Connection.clone) ---------------------------


def _transcript(ours: Connection, client_side: bool) -> list[object]:
    """Drive ``ours`` against a plain h2 peer through settings, two streams, flow
    control, a reset, a PING and a GOAWAY; what it sent and the events it gave."""
    peer = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=not client_side, header_encoding=None))
    peer.initiate_connection()
    out: list[object] = []

    def to_ours() -> None:
        out.append([type(e).__name__ for e in ours.receive_data(peer.data_to_send())])

    def to_peer() -> None:
        data = ours.data_to_send()
        out.append(data)
        peer.receive_data(data)

    if client_side:
        to_peer()
        to_ours()
        to_peer()
        ours.send_headers(1, REQUEST)
        ours.send_data(1, b"x" * 1000, end_stream=True)
        to_peer()
        peer.send_headers(1, RESPONSE)
        peer.send_data(1, b"y" * 20000)
        peer.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
        to_ours()
        ours.send_headers(3, REQUEST)
        to_peer()
        peer.reset_stream(3)
        peer.ping(b"12345678")
        to_ours()
        to_peer()
        peer.close_connection(last_stream_id=0)
        to_ours()
    else:
        to_ours()
        to_peer()
        to_ours()
        peer.send_headers(1, REQUEST)
        peer.send_data(1, b"x" * 20000, end_stream=True)
        to_ours()
        ours.send_headers(1, RESPONSE)
        ours.send_data(1, b"y" * 1000)
        ours.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
        to_peer()
        peer.send_headers(3, REQUEST)
        peer.reset_stream(3)
        peer.ping(b"12345678")
        to_ours()
        to_peer()
        peer.close_connection(last_stream_id=1)
        to_ours()
    out.append(ours.state_machine.state)
    return out


@pytest.mark.parametrize("client_side", [False, True])
def test_a_clone_of_a_template_behaves_as_a_connection_built_anew(client_side):
    from dubbo.transport import connection as transport
    from dubbo.transport.hpack_cache import CachingDecoder, CachingEncoder

    def built() -> Connection:
        config = h2.config.H2Configuration(
            client_side=client_side, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
            validate_inbound_headers=False, normalize_inbound_headers=False)
        conn = new_h2_connection(config, 64 * 1024, 7)
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        return conn

    template = built()
    snapshot = {k: (v, repr(vars(v)) if hasattr(v, "__dict__") else repr(v))
                for k, v in vars(template).items() if k != "_frame_dispatch_table"}
    first = template.clone(CachingEncoder(), CachingDecoder(64 * 1024))
    second = template.clone(CachingEncoder(), CachingDecoder(64 * 1024))
    assert set(vars(first)) == set(vars(built())), \
        _changed("the attributes H2Connection.__init__ sets")
    shared = {k for k, v in vars(first).items()
              if v is getattr(template, k) and not isinstance(v, (int, bool, str, type(None)))}
    assert shared == {"config"}, _changed(f"H2Connection's mutable state ({shared})")
    assert all(getattr(m, "__self__", first) is first
               for m in first._frame_dispatch_table.values())
    # The same functions as a built connection's, our overrides included.
    def functions(conn: Connection) -> dict[type, str]:
        return {kind: getattr(m, "__func__", m).__qualname__
                for kind, m in conn._frame_dispatch_table.items()}

    assert functions(first) == functions(built())
    assert "Connection._receive_headers_frame" in functions(first).values()
    assert _transcript(first, client_side) == _transcript(built(), client_side)
    assert _transcript(second, client_side) == _transcript(built(), client_side)
    # The template is as it was: a later clone starts where the first did.
    after = {k: (v, repr(vars(v)) if hasattr(v, "__dict__") else repr(v))
             for k, v in vars(template).items() if k != "_frame_dispatch_table"}
    assert after == snapshot
    assert _transcript(template.clone(CachingEncoder(), CachingDecoder(64 * 1024)),
                       client_side) == _transcript(built(), client_side)
    assert transport._template(client_side, 64 * 1024, 7).clone(
        CachingEncoder(), CachingDecoder(64 * 1024)).data_to_send() == built().data_to_send()


# -- large DATA payloads received into buffers of their own (issue 11, copies) ---------

def _pending(buffer: FrameBuffer) -> bytes:
    """What a frame buffer holds that is not a frame yet, as the bytes received."""
    body = getattr(buffer, "_body", None)
    if body is None:
        return bytes(buffer._data)
    stream_id, flags, length = buffer._body_frame
    header = length.to_bytes(3, "big") + bytes([0, flags]) + stream_id.to_bytes(4, "big")
    return header + bytes(body[:buffer._body_filled]) + bytes(buffer._data)


_BIG = h2_internals.BODY_MIN


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(st.tuples(
           st.sampled_from([0, 1, 6, 9]), st.sampled_from([0, 1, 4, 5, 8, 9]),
           st.sampled_from([0, 1, 3]),
           st.sampled_from([0, 3, 9, _BIG - 1, _BIG, _BIG + 5000]).flatmap(
               lambda n: st.binary(min_size=n, max_size=n))), max_size=4),
       cuts=st.lists(st.integers(0, 3 * _BIG), max_size=6), max_size=st.sampled_from(
           [16384, _BIG + 100, 2**24 - 1]))
@example(frames=[(0, 0, 1, b"a" * _BIG), (0, 1, 3, b"b" * (_BIG + 1))],
         cuts=[5, 9, 10, _BIG + 9, _BIG + 20], max_size=2**24 - 1)
def test_large_data_payloads_yield_what_h2s_frame_buffer_yields(frames, cuts, max_size):
    """Payloads of BODY_MIN bytes or more that arrive in pieces are gathered in a buffer
    of their own: same frames, errors and bytes pending as h2's, split anywhere."""
    wire = b"".join(_frame_bytes(*frame) for frame in frames)
    stock = FrameBuffer(server=False)
    ours = h2_internals.GuardedFrameBuffer(False, max_header_block=10**7)
    stock.max_frame_size = ours.max_frame_size = max_size
    result = []
    for buffer in (ours, stock):
        seen = _run(buffer, wire, cuts)
        if not isinstance(seen[-1], tuple):  # no error: what is pending, as received
            seen[-2] = _pending(buffer)
        result.append(seen)
    assert result[0] == result[1]


def test_a_large_payload_is_read_into_its_own_buffer_and_is_the_events_data():
    """body_target: the rest of a large DATA payload is read straight into the buffer
    that becomes the DataReceived's data (no frame-buffer copy, no copy out of it);
    flow control and END_STREAM as h2's."""
    server, client = _pair()
    server.increment_flow_control_window(1 << 20)
    client.receive_data(server.data_to_send())
    window = server.inbound_flow_control_window
    size = 300_000
    assert client.max_outbound_frame_size >= size
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    client.send_headers(1, REQUEST)
    client.send_data(1, payload, end_stream=True)
    wire = memoryview(client.data_to_send())
    head = len(wire) - size - 9 + 1000  # headers, DATA header, 1000 payload bytes
    assert server.body_target() is None
    events = server.receive_data(wire[:head])
    assert [type(e) for e in events] == [h2.events.RequestReceived]
    assert not server.incoming_buffer._data, "the payload went to the frame buffer"
    got = 0
    while (target := server.body_target()) is not None:
        assert len(target) == len(wire) - head - got + 9  # + the next frame's header
        count = min(len(target), 70_000, len(wire) - head - got)
        target[:count] = wire[head + got:head + got + count]
        got += count
        target.release()
        events += server.receive_into_body(count)
    data = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert len(data) == 1 and data[0].data == payload
    assert type(data[0].data) is bytearray  # the buffer read into, not a copy
    assert data[0].flow_controlled_length == size
    assert isinstance(events[-1], h2.events.StreamEnded)
    assert server.inbound_flow_control_window == window - size


@pytest.mark.parametrize("cuts", [[], [3], [24], [24 + 9 + 10], [30, 24 + 9 + _BIG]])
@pytest.mark.parametrize("preface", [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                                     b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"])
def test_a_servers_preface_is_checked_before_a_large_payload_is_taken(cuts, preface):
    """add_data leaves the client preface to h2 (``_preamble_len``), split anywhere."""
    wire = preface + _frame_bytes(0, 1, 1, b"z" * (_BIG + 3)) + _frame_bytes(6, 0, 0, b"p" * 8)
    stock = FrameBuffer(server=True)
    ours = h2_internals.GuardedFrameBuffer(True, max_header_block=10**7)
    stock.max_frame_size = ours.max_frame_size = 2**20
    results = []
    for buffer in (ours, stock):
        try:
            seen = _run(buffer, wire, cuts)
        except h2.exceptions.ProtocolError as exc:  # raised by add_data
            seen = [str(exc)]
        results.append(seen)
    assert results[0] == results[1]
    assert len(results[0]) == (4 if preface.endswith(b"SM\r\n\r\n") else 1)


def test_a_payload_buffer_is_a_bytearray_of_the_size_asked():
    """ctypes' PyByteArray_FromStringAndSize(NULL, n): a real, resizable bytearray."""
    assert h2_internals._NEW_BYTEARRAY is not None  # CPython: the uninitialized kind
    for size in (0, 1, h2_internals.BODY_MIN, 1 << 20):
        body = h2_internals._bytearray_for(size)
        assert type(body) is bytearray and len(body) == size
        body[:] = b"y" * size
        body += b"z"
        assert body == b"y" * size + b"z"


def test_the_next_frames_header_is_read_with_a_payload_so_the_next_payload_is_too():
    """body_target has room for the 9-byte header after the payload: a read that
    brings it lets the next large payload be read straight into its own buffer (no
    read through the frame buffer between two 1 MiB frames of one message)."""
    server, client = _pair()
    server.increment_flow_control_window(1 << 22)
    client.receive_data(server.data_to_send())
    first, second = b"a" * (1 << 20), b"b" * 200_000
    client.send_headers(1, REQUEST)
    client.send_data(1, first)
    client.send_data(1, second)
    client.send_data(1, b"c" * 10, end_stream=True)  # small: through the frame buffer
    wire = memoryview(client.data_to_send())
    pos = len(wire) - len(first) - len(second) - 10 - 27 + 100
    events = server.receive_data(wire[:pos])
    direct = 0
    while (target := server.body_target()) is not None:
        count = min(len(target), len(wire) - pos)
        target[:count] = wire[pos:pos + count]
        target.release()
        pos += count
        direct += 1
        events += server.receive_into_body(count)
        # the next header went where it belongs: a new payload buffer, or (a small
        # frame's) the frame buffer
        assert server.body_target() is None or not server.incoming_buffer._data
    assert direct == 2  # the rest of the first payload + next header, the second whole
    events += server.receive_data(wire[pos:])
    data = [e.data for e in events if isinstance(e, h2.events.DataReceived)]
    assert data == [first, second, b"c" * 10]
    assert [type(d) for d in data] == [bytearray, bytearray, bytes]
    assert isinstance(events[-1], h2.events.StreamEnded)


def test_a_payload_whose_target_view_is_kept_is_still_delivered_whole():
    server, client = _pair()
    server.increment_flow_control_window(1 << 20)
    client.receive_data(server.data_to_send())
    client.send_headers(1, REQUEST)
    client.send_data(1, b"q" * 70_000, end_stream=True)
    wire = memoryview(client.data_to_send())
    pos = len(wire) - 70_000
    server.receive_data(wire[:pos])
    target = server.body_target()
    assert target is not None and len(target) == 70_000 + 9
    target[:70_000] = wire[pos:]
    events = server.receive_into_body(70_000)  # target not released: copied instead
    assert [e.data for e in events if isinstance(e, h2.events.DataReceived)] == [b"q" * 70_000]


def test_data_on_an_open_stream_leaves_its_state_as_it_is():
    """Why DATA without END_STREAM on an OPEN or HALF_CLOSED_LOCAL stream skips the
    stream state machine: the state stays and data_received only makes the event."""
    table = h2.stream._transitions
    recv_data = h2.stream.StreamInputs.RECV_DATA
    for state in (h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL):
        assert table[(state, recv_data)] == (
            h2.stream.H2StreamStateMachine.data_received, state), _changed("stream states")


@pytest.mark.parametrize("grow_connection", [True, False])
def test_data_takes_the_short_way_and_overflows_a_window_as_h2_does(monkeypatch,
                                                                    grow_connection):
    """DATA past the stream's window (the connection's grown larger) or past the
    connection's: the same error, the short way (H2Stream.receive_data not called)
    and h2's own."""
    results = []
    for fast in (True, False):
        conn = _production(False, None)
        if not fast:
            conn._frame_dispatch_table[DataFrame] = functools.partial(
                h2.connection.H2Connection._receive_data_frame, conn)
        conn.initiate_connection()
        window = conn.local_settings.initial_window_size
        if grow_connection:
            conn.increment_flow_control_window(window + (1 << 20))
        else:
            window = min(window, conn._inbound_flow_control_window_manager.current_window_size)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(1, REQUEST)
        conn.receive_data(client.data_to_send())
        conn.data_to_send()
        with monkeypatch.context() as patch:
            if fast:
                patch.setattr(h2.stream.H2Stream, "receive_data", None)  # not called
            events = conn.receive_data(
                DataFrame(1, data=b"x" * 16384).serialize() * (window // 16384))
            seen: list[object] = [repr(events), conn.streams[1]._actual_content_length]
            with pytest.raises(h2.exceptions.ProtocolError) as err:
                conn.receive_data(DataFrame(1, data=b"x" * 16384).serialize())
        seen += [type(err.value), str(err.value), conn.data_to_send(),
                 vars(conn.streams[1]._inbound_window_manager),
                 vars(conn._inbound_flow_control_window_manager)]
        results.append(seen)
    assert results[0] == results[1]
    assert results[0][2] is h2.exceptions.FlowControlError


def test_local_flow_control_window_answers_as_h2s():
    """Our ``local_flow_control_window``: h2's answer, or h2's error, for a stream whose
    window is the smaller, one whose connection's is, an unknown, a forgotten and 0."""
    conn = _production(True, None)
    conn.initiate_connection()
    conn.send_headers(1, REQUEST)
    conn.send_headers(3, REQUEST)
    conn.streams[1].outbound_flow_control_window = 10
    conn.streams[3].outbound_flow_control_window = 1 << 30
    conn.send_headers(5, REQUEST)
    conn.reset_stream(5)
    conn.streams.pop(5)  # forgotten by h2 once closed

    def ask(how, stream_id):
        try:
            return how(stream_id)
        except h2.exceptions.H2Error as exc:
            return type(exc), str(exc)

    stock = functools.partial(h2.connection.H2Connection.local_flow_control_window, conn)
    answers = [ask(how, i) for how in (conn.local_flow_control_window, stock)
               for i in (1, 3, 7, 5, 0)]
    assert answers[:5] == answers[5:]
    assert answers[:2] == [10, conn.outbound_flow_control_window]


def test_the_send_sides_header_info_is_bounded_in_entries_and_bytes():
    """What send_headers remembers per header block stays within _INFO_MAX_ENTRIES and
    _INFO_MAX_BYTES however many distinct blocks a program sends (metadata it picks
    per call), and a block over _INFO_MAX_BLOCK is never kept."""
    conn = _production(True, None)
    conn.initiate_connection()
    request = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/s/m"),
               (b":authority", b"127.0.0.1:1"), (b"te", b"trailers")]
    most = 0
    for i in range(3 * h2_internals._INFO_MAX_ENTRIES):
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [*request, (b"x-n", b"%d" % i)], end_stream=True)
        conn.data_to_send()
        assert len(conn._header_info) <= h2_internals._INFO_MAX_ENTRIES
        assert conn._header_info_bytes <= h2_internals._INFO_MAX_BYTES
        most = max(most, len(conn._header_info))
    assert most == h2_internals._INFO_MAX_ENTRIES  # the bound was reached, then held
    conn._header_info.clear()
    conn._header_info_bytes = 0
    big = b"v" * h2_internals._INFO_MAX_BLOCK
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, [*request, (b"x-big", big)], end_stream=True)
    assert conn._header_info == {} and conn._header_info_bytes == 0
