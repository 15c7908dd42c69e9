"""Pins every behaviour of h2's, hpack's and hyperframe's private parts that
dubbo/transport/h2_internals.py relies on, sans-I/O (no socket, no thread).

An h2/hpack/hyperframe upgrade that changes one of them fails here, with a message
naming what changed, rather than in a call. Each test drives our ``Connection``
against a plain h2 peer, byte for byte.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import pathlib
import re

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

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


def _server(max_concurrent_streams: int | None = None) -> Connection:
    config = h2.config.H2Configuration(client_side=False, header_encoding=None)
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
