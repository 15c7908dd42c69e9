"""Every use of h2's, hpack's and hyperframe's private parts, in one place.

The rest of the transport uses only their public API plus what this module exports.
Each behaviour relied on here is pinned by tests/test_h2_internals.py, and the three
libraries are pinned in setup.cfg to the releases those tests passed on (h2 4.4,
hpack 4.2, hyperframe 6.1): an upgrade that changes one fails a named test there, not
a call in production. What is private, and why we touch it:

================================ ===================================================
private part                     why
================================ ===================================================
``H2Connection._receive_frame``  re-implemented without its ``repr(frame)`` (a hex
``_frame_dispatch_table``        dump of every DATA payload, even with logging off:
``_prepare_for_sending``         35% of the CPU echoing 4 MiB); same logic otherwise
``_stream_is_closed_by_reset``
``_stream_is_closed_by_end``
``StreamClosedError._events``
``open_inbound_streams`` (read   turned off, so a stream over our
by ``_receive_headers_frame``)   MAX_CONCURRENT_STREAMS is refused alone (RFC 9113
``_open_streams``, ``streams``   §5.1.2), not by tearing the connection down
``state_machine.state``          put back after a GOAWAY, sent or received, so that
``_frame_dispatch_table``        streams already running drain (gRPC's GOAWAY)
``_data_to_send``                peeked, without the lock, to skip a flush; taken
``_prepare_for_sending``         without a copy, and a large DATA frame's payload
``DataFrame`` flags/body_len     kept as a view beside it (``take_output``): h2
                                 copies a 1 MiB frame five times on its way out
``FrameBuffer.__next__``         a DATA frame's body parsed from a view of the
                                 buffer, not from a copy of it
``incoming_buffer``              replaced by ``GuardedFrameBuffer``: frame size
``FrameBuffer._data``            checked on the 9-byte header, header block bounded
``FrameBuffer._headers_buffer``  in bytes
``FrameBuffer._update_header_buffer``
``local_settings`` (replaced)    our settings in force from the preface on
every attribute h2's ``__init__`` ``Connection.clone``: a new connection copied
sets, ``Settings._settings``,    from a template instead of built (h2's init
``WindowManager``, the dispatch  makes objects we replace at once)
table, ``FrameBuffer._preamble``
``encoder``/``decoder``          replaced by hpack_cache's caching coders
hpack ``HeaderTable``, its       a table that counts its changes, so hpack_cache
``add``/``maxsize``/``resized``, may reuse a block coded at the same version
coders' ``header_table``
``HeaderTable.dynamic_entries``, copied and put back whole (``table_snapshot``,
``_current_size``, ``_maxsize``  ``table_restore``): hpack_first replays a new
                                 connection's first blocks coded by an earlier one
hyperframe ``RstStreamFrame``,   frames built or dispatched on above
``GoAwayFrame``
================================ ===================================================
"""

from __future__ import annotations

import collections
import struct
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from h2.frame_buffer import FrameBuffer
from h2.utilities import SizeLimitDict
from hpack import Decoder, Encoder
from hpack.table import HeaderTable
from hyperframe.exceptions import InvalidDataError, InvalidFrameError
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, RstStreamFrame

__all__ = ["Connection", "GuardedFrameBuffer", "VersionedTable", "install_versioned_table",
           "resize_pending", "OutputPart", "TableState", "table_snapshot", "table_restore"]

_HEADERS, _PUSH_PROMISE = 0x01, 0x05  # frame types that may start a header block
_DATA = 0x00
_FRAME_HEADER = struct.Struct(">HBBBL")  # hyperframe's 9-byte frame header
# DATA payloads at least this big are sent as views of the caller's buffer, beside
# their 9-byte header, instead of being copied into h2's output buffer.
ZERO_COPY_DATA = 16 * 1024
OutputPart = bytes | bytearray | memoryview


class GuardedFrameBuffer(FrameBuffer):
    """h2's frame buffer, checked before it buffers: a frame header declaring more than
    our SETTINGS_MAX_FRAME_SIZE is refused as soon as its 9 bytes arrive (h2 waits for
    the whole declared frame first), and a header block (HEADERS + CONTINUATION) may
    not grow past ``max_header_block`` bytes (h2 only counts its frames)."""

    def __init__(self, server: bool, max_header_block: int) -> None:
        super().__init__(server=server)
        self.max_header_block = max_header_block
        self._header_block_size = 0

    def __next__(self) -> Any:
        data = self._data
        if len(data) >= 9:
            length = int.from_bytes(data[:3], "big")
            if length > self.max_frame_size:
                raise h2.exceptions.FrameTooLargeError(
                    f"frame of {length} bytes declared, max {self.max_frame_size}")
            if data[3] == _DATA:
                return self._next_data_frame(data)
        return super().__next__()

    def _next_data_frame(self, data: bytearray) -> Any:
        """h2's ``__next__`` for a DATA frame, with its body parsed from a view of the
        buffer instead of a copy (``parse_body`` copies it once, to the frame)."""
        try:
            frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        except (InvalidDataError, InvalidFrameError) as err:
            raise h2.exceptions.ProtocolError(f"Received frame with invalid header: {err!s}") \
                from err
        if len(data) < length + 9:
            raise StopIteration
        self._validate_frame_length(length)
        with memoryview(data) as view, view[9 : 9 + length] as body:
            try:
                frame.parse_body(body)  # keeps no view: the body is copied (tobytes)
            except InvalidDataError as err:
                raise h2.exceptions.ProtocolError(
                    "Received frame with non-compliant data") from err
            except InvalidFrameError as err:
                raise h2.exceptions.FrameDataMissingError(
                    "Frame data missing or invalid") from err
        del data[: 9 + length]
        new_frame = self._update_header_buffer(frame)
        return new_frame if new_frame is not None else self.__next__()

    def _update_header_buffer(self, f: Any) -> Any:
        if self._headers_buffer or (f is not None and f.type in (_HEADERS, _PUSH_PROMISE)
                                    and "END_HEADERS" not in f.flags):
            self._header_block_size = (self._header_block_size if self._headers_buffer
                                       else 0) + len(getattr(f, "data", b""))
            if self._header_block_size > self.max_header_block:
                raise h2.exceptions.DenialOfServiceError(
                    f"header block over {self.max_header_block} bytes")
        return super()._update_header_buffer(f)


class Connection(h2.connection.H2Connection):
    """h2's connection with the changes listed in the module docstring.

    Built with our settings (in force from the preface on), our HPACK coders and a
    ``GuardedFrameBuffer``. ``streams_limited_by_us``: when true, h2 does not count
    inbound streams against our MAX_CONCURRENT_STREAMS (it would tear the whole
    connection down); the owner refuses excess streams itself with REFUSED_STREAM.
    """

    streams_limited_by_us = False

    def __init__(self, config: h2.config.H2Configuration,
                 settings: dict[h2.settings.SettingCodes, int],
                 encoder: Encoder, decoder: Decoder, max_header_block: int) -> None:
        # Output queued before ``_data_to_send`` (``_prepare_for_sending``).
        self._parts: list[OutputPart] = []
        super().__init__(config=config)
        self.encoder = encoder
        self.decoder = decoder
        self.incoming_buffer = GuardedFrameBuffer(not config.client_side, max_header_block)
        # Our settings go in the preface's SETTINGS frame and are in force at once:
        # accepting more than we advertised before the peer's ACK is harmless, and h2
        # refreshes its frame-size limit only per receive_data() call, so a later
        # update_settings() races an ACK and a large frame arriving in one read.
        self.local_settings = h2.settings.Settings(client=config.client_side,
                                                   initial_values=settings)
        self.max_inbound_frame_size = self.local_settings.max_frame_size
        self._keep_open_after_goaway()

    def clone(self, encoder: Encoder, decoder: Decoder) -> Connection:
        """A new connection in this one's state, which must be a template: built, its
        ``initiate_connection()`` (and window increments) done, nothing sent or received
        since. It gets its own copy of everything that changes and the given coders,
        without h2's ``__init__`` (three ``Settings``, two HPACK coders and a frame
        buffer we replace, a dispatch table): a new connection costs less to set up."""
        assert not self.streams and not self._parts and not self.incoming_buffer._data
        clone = object.__new__(type(self))
        state = clone.__dict__
        state.update(self.__dict__)
        machine = h2.connection.H2ConnectionStateMachine()
        machine.state = self.state_machine.state
        frames: Any = self.incoming_buffer  # a GuardedFrameBuffer (__init__)
        window = object.__new__(type(self._inbound_flow_control_window_manager))
        window.__dict__.update(self._inbound_flow_control_window_manager.__dict__)
        state.update(
            state_machine=machine, streams={}, encoder=encoder, decoder=decoder,
            local_settings=_copy_settings(self.local_settings),
            remote_settings=_copy_settings(self.remote_settings),
            incoming_buffer=GuardedFrameBuffer(not self.config.client_side,
                                               frames.max_header_block),
            _header_frames=[], _data_to_send=bytearray(self._data_to_send), _parts=[],
            _closed_streams=SizeLimitDict(size_limit=self.MAX_CLOSED_STREAMS),
            _inbound_flow_control_window_manager=window,
            _frame_dispatch_table={kind: receive.__get__(clone)
                                   for kind, receive in _h2_dispatch().items()})
        clone._keep_open_after_goaway()
        return clone

    # -- what h2 reads ---------------------------------------------------------------

    @property
    def open_inbound_streams(self) -> int:
        count = self._open_streams(int(not self.config.client_side))  # purges closed ones
        return 0 if self.streams_limited_by_us else count

    def _receive_frame(self, frame: Any) -> list[h2.events.Event]:
        events: list[h2.events.Event]  # h2's dispatch table and exceptions are untyped
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as exc:
            # Closed by RST_STREAM: answer with RST_STREAM; otherwise a connection error.
            if not self._stream_is_closed_by_reset(exc.stream_id):
                raise
            self._prepare_for_sending([_rst_frame(exc.stream_id, exc.error_code)])
            events = exc._events
            return events
        except h2.exceptions.StreamIDTooLowError as exc:
            if self._stream_is_closed_by_reset(exc.stream_id):
                self._prepare_for_sending(
                    [_rst_frame(exc.stream_id, h2.errors.ErrorCodes.STREAM_CLOSED)])
                return []
            if self._stream_is_closed_by_end(exc.stream_id):
                raise h2.exceptions.StreamClosedError(exc.stream_id) from exc
            raise
        self._prepare_for_sending(frames)
        return events

    # -- what we ask ------------------------------------------------------------------

    def count_open_inbound(self, before: int | None = None) -> int:
        """Streams the peer opened that are not closed (h2 purges closed ones here);
        with ``before``, only those opened before that stream id."""
        remainder = int(not self.config.client_side)
        if before is None:
            return self._open_streams(remainder)
        return sum(1 for stream_id, stream in self.streams.items()
                   if stream_id < before and stream_id % 2 == remainder and stream.open)

    def sending_open(self, stream_id: int) -> bool:
        """True while we may still send on ``stream_id`` (not closed, not forgotten)."""
        stream = self.streams.get(stream_id)
        return stream is not None and not stream.closed

    def has_output(self) -> bool:
        """Whether h2 holds bytes to send. Read without the transport lock: a thread
        that adds output flushes it itself, so a stale False costs nothing."""
        return bool(self._data_to_send) or bool(self._parts)

    # -- what we send -----------------------------------------------------------------

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False,
                  pad_length: Any = None) -> None:
        """h2's; a large view passes through h2 wrapped, as h2's stream copies a
        ``memoryview`` (``tobytes``) and only ever takes the length of anything else."""
        if type(data) is memoryview and pad_length is None and len(data) >= ZERO_COPY_DATA:
            data = _View(data)  # type: ignore[assignment]  # unwrapped below
        super().send_data(stream_id, data, end_stream, pad_length)

    def _prepare_for_sending(self, frames: list[Any]) -> None:
        """h2's, except that a large DATA frame's payload is not copied: its header
        and the payload (often a view of the caller's message) queue as parts of their
        own, after what h2 buffered before them (``take_output``)."""
        if not frames:
            return
        out = self._data_to_send
        for frame in frames:
            data: Any = frame.data if type(frame) is DataFrame else None
            if type(data) is _View:
                data = data.view
            elif data is None or len(data) < ZERO_COPY_DATA or frame.pad_length:
                out += frame.serialize()
                continue
            length = len(data)
            frame.body_len = length
            if out:
                self._parts.append(out)
                out = self._data_to_send = bytearray()
            flags = 0x01 if "END_STREAM" in frame.flags else 0
            self._parts.append(_FRAME_HEADER.pack((length >> 8) & 0xFFFF, length & 0xFF, _DATA,
                                                  flags, frame.stream_id & 0x7FFFFFFF))
            self._parts.append(data)
        assert all(f.body_len <= self.max_outbound_frame_size for f in frames)

    def take_output(self) -> list[OutputPart]:
        """Everything queued to send, in order, as parts to write back to back (no
        copy); empty when nothing is. Parts may be views of senders' buffers, which
        must not change (messages are ``bytes``)."""
        parts = self._parts
        if parts:
            self._parts = []
        elif not self._data_to_send:
            return []
        else:
            parts = []
        if self._data_to_send:
            parts.append(self._data_to_send)
            self._data_to_send = bytearray()
        return parts

    def data_to_send(self, amount: int | None = None) -> bytes:
        """h2's, with the parts ``take_output`` would return joined in front."""
        if self._parts:
            self._data_to_send = bytearray(b"".join(self.take_output()))
        data: bytes = super().data_to_send(amount)
        return data

    def send_goaway(self, error_code: int, last_stream_id: int | None = None,
                    additional_data: bytes | None = None) -> None:
        """GOAWAY without h2 closing the connection: streams up to ``last_stream_id``
        go on (``close_connection`` moves h2's state machine to CLOSED)."""
        state = self.state_machine.state
        self.close_connection(error_code, additional_data=additional_data,
                              last_stream_id=last_stream_id)
        self.state_machine.state = state

    def _keep_open_after_goaway(self) -> None:
        """h2 treats any GOAWAY received as the end of the connection and rejects every
        later frame. gRPC drains instead: streams at or below the GOAWAY's last stream
        id run to completion (PROTOCOL-HTTP2.md "GOAWAY"). So the state machine is put
        back after each GOAWAY received; the owner's ``draining`` flag stops new
        streams."""
        table = self._frame_dispatch_table
        receive_goaway = table[GoAwayFrame]

        def receive_and_stay_open(frame: GoAwayFrame) -> Any:
            state = self.state_machine.state
            result = receive_goaway(frame)
            self.state_machine.state = state
            return result

        table[GoAwayFrame] = receive_and_stay_open


def _copy_settings(settings: h2.settings.Settings) -> h2.settings.Settings:
    """A ``Settings`` with its own copy of the values (current and pending)."""
    copied = object.__new__(h2.settings.Settings)
    copied.__dict__.update(settings.__dict__)
    copied._settings = {code: collections.deque(values)
                        for code, values in settings._settings.items()}
    return copied


_DISPATCH: dict[type, Any] = {}


def _h2_dispatch() -> dict[type, Any]:
    """h2's frame dispatch table as plain functions (bound to each clone)."""
    if not _DISPATCH:
        table: dict[type, Any] = h2.connection.H2Connection()._frame_dispatch_table
        _DISPATCH.update({kind: method.__func__ for kind, method in table.items()})
    return _DISPATCH


class _View:
    """A DATA payload on its way through h2's ``send_data`` (which needs only its
    length), so that h2 keeps it as it is."""

    __slots__ = ("view",)

    def __init__(self, view: memoryview) -> None:
        self.view = view

    def __len__(self) -> int:
        return len(self.view)


def _rst_frame(stream_id: int, error_code: int) -> RstStreamFrame:
    frame = RstStreamFrame(stream_id)
    frame.error_code = error_code
    return frame


# -- hpack -------------------------------------------------------------------------


class VersionedTable(HeaderTable):
    """An HPACK dynamic table that counts every change to its contents or size: hpack
    changes a table only through ``add`` and the ``maxsize`` setter."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return super().maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.version += 1
        # mypy types a property read off its class as the getter; it is the property.
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


def install_versioned_table(coder: Encoder | Decoder) -> VersionedTable:
    """Give a fresh hpack coder a ``VersionedTable`` (before it codes anything)."""
    table = VersionedTable()
    coder.header_table = table
    return table


def resize_pending(table: HeaderTable) -> bool:
    """True while an encoder owes the peer a dynamic table size update: its next
    block starts with one, so a block remembered before cannot be reused."""
    return bool(table.resized)


# -- hpack table snapshots (hpack_first) ---------------------------------------------

# A dynamic table's whole state: entries (newest first), size, maxsize, resized, version.
TableState = tuple[tuple[tuple[bytes, bytes], ...], int, int, bool, int]


def table_snapshot(table: VersionedTable) -> TableState:
    """Everything of ``table`` that coding depends on (hpack's ``HeaderTable``)."""
    return (tuple(table.dynamic_entries), table._current_size, table._maxsize,
            table.resized, table.version)


def table_restore(table: VersionedTable, state: TableState) -> None:
    """Put ``table`` in the state ``table_snapshot`` took (of this or another table).
    Its version only goes up: a version the table had before names other contents."""
    entries, table._current_size, table._maxsize, table.resized, version = state
    table.dynamic_entries = collections.deque(entries)
    table.version = max(version, table.version + 1)
