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
``_open_streams``, ``streams``,  §5.1.2), not by tearing the connection down;
``h2.stream.STREAM_OPEN``        the owner counts open streams itself
``state_machine.state``          put back after a GOAWAY, sent or received, so that
``_frame_dispatch_table``        streams already running drain (gRPC's GOAWAY)
``_data_to_send``                peeked, without the lock, to skip a flush; taken
``_prepare_for_sending``         without a copy, and a large DATA frame's payload
``DataFrame`` flags/body_len     kept as a view beside it (``take_output``): h2
                                 copies a 1 MiB frame five times on its way out
``H2Connection.receive_data``    re-implemented without a trace log per read,
``FrameBuffer.__next__``         frames taken with ``next_frame`` (no
                                 StopIteration per read)
``_begin_new_stream``,           HEADERS and DATA sent without h2's frame objects
``open_outbound_streams``,       (``send_headers``/``send_data``, issue 11: h2's
``streams``, an ``H2Stream``'s   send path cost a unary call ~50 µs per side): the
``state_machine`` (``state``,    common cases advance exactly the state h2's send
``client``, ``headers_sent``,    path would, byte for byte the same frames; the
``trailers_sent``,               rest is h2's own. ``test_our_sends_queue_h2s_bytes``
``stream_closed_by``),           runs random sequences against h2's own sends
``outbound_flow_control_window``
(also read by our
``local_flow_control_window``),
``request_method``,
``_authority``, h2.utilities'
header helpers, ``_data_to_send``
``incoming_buffer``              replaced by ``GuardedFrameBuffer``: frame size
``FrameBuffer._data``            checked on the 9-byte header, header block bounded
``FrameBuffer._headers_buffer``  in bytes; a large DATA payload arriving in
``FrameBuffer._update_header_    pieces is gathered in a buffer of its own
buffer``, ``_preamble_len``,     (``body_target``, which the socket reads into):
``add_data``                     no copy into and out of the frame buffer
``_receive_headers_frame``,      re-implemented for HEADERS without PRIORITY when
``_decode_headers``,             h2 neither normalizes nor validates received
``H2Stream`` (built), its        headers (our configuration): h2 builds header-
``state_machine``,               validation flags for nothing and opens a stream
``_initialize_content_length``,  through several layers; same checks, events and
``_closed_streams``,             errors otherwise (a differential test pins it)
``highest_inbound_stream_id``
``_receive_data_frame``,         re-implemented for DATA on an open stream of an
``_inbound_flow_control_window_  open connection: the connection's state machine
manager``, ``_handle_data_on_    and stream lookups skipped, h2's stream and
closed_stream``, ``H2Stream``'s  window bookkeeping as they are; DATA without
``_inbound_window_manager``,     END_STREAM on an OPEN or HALF_CLOSED_LOCAL stream
``_actual_content_length``,      with no content-length skips H2Stream.receive_data
``_expected_content_length``,    and its state machine (a no-op there: the
``headers_received``, the        stream's state stays), same event, window and
``_transitions`` for RECV_DATA   byte count (a differential test pins it)
hyperframe frame classes built   the lean frame parser (``GuardedFrameBuffer``):
with ``__new__``, their          the common frames built without hyperframe's
attributes, ``Flags._flags``/    ``__init__`` chain and header parser (a third of
``_valid_flags``, ``parse_body`` h2's receive cost), bodies parsed by hyperframe
                                 where there is anything to check
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
import h2.stream
from h2.connection import AllowedStreamIDs, ConnectionState
from h2.frame_buffer import FrameBuffer
from h2.stream import StreamClosedBy, StreamState
from h2.utilities import (
    SizeLimitDict,
    authority_from_headers,
    extract_method_header,
    is_informational_response,
    utf8_encode_headers,
)
from hpack import Decoder, Encoder, HeaderTuple
from hpack.table import HeaderTable
from hyperframe.exceptions import InvalidDataError, InvalidFrameError, InvalidPaddingError
from hyperframe.flags import Flags
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

__all__ = ["Connection", "GuardedFrameBuffer", "VersionedTable", "install_versioned_table",
           "resize_pending", "OutputPart", "TableState", "table_snapshot", "table_restore"]

_HEADERS, _PUSH_PROMISE = 0x01, 0x05  # frame types that may start a header block
_DATA, _SETTINGS = 0x00, 0x04
_CONNECTION_OPEN = (ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN)
_RECV_HEADERS = h2.connection.ConnectionInputs.RECV_HEADERS
_STREAM_RECV_HEADERS = h2.stream.StreamInputs.RECV_HEADERS
_STREAM_RECV_END_STREAM = h2.stream.StreamInputs.RECV_END_STREAM
_CONTINUATION = 0x09
_DataReceived = h2.events.DataReceived
_END_STREAM, _END_HEADERS = 0x01, 0x04  # frame flags
_IDLE = ConnectionState.IDLE
_OPEN, _HALF_CLOSED_REMOTE = StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE
_HALF_CLOSED_LOCAL, _CLOSED = StreamState.HALF_CLOSED_LOCAL, StreamState.CLOSED
# What send_headers needs to know of a header block beyond its HPACK coding, by block:
# (a plain list of two-tuples h2 would code as is, informational (:status 1xx),
# :authority, :method), h2's own answers. Bounded like hpack_cache's caches.
_INFO_MAX_ENTRIES = 256
_INFO_MAX_BYTES = 256 * 1024
_INFO_MAX_BLOCK = 4 * 1024
_HeaderInfo = tuple[bool, bool, Any, Any]
_FRAME_HEADER = struct.Struct(">HBBBL")  # hyperframe's 9-byte frame header
# DATA payloads at least this big are sent as views of the caller's buffer, beside
# their 9-byte header, instead of being copied into h2's output buffer.
ZERO_COPY_DATA = 16 * 1024
OutputPart = bytes | bytearray | memoryview


class _SharedFlags(Flags):
    """The flags of received frames, one object per frame type and flag byte, shared:
    h2 only reads them (``"END_STREAM" in frame.flags``). The one frame h2 changes,
    a HEADERS without END_HEADERS that its frame buffer completes, gets flags of its
    own (``_fresh_flags``); any other change is a bug, and raises."""

    def add(self, value: str) -> None:
        raise TypeError("the flags of a received frame are shared: not to be changed")

    def discard(self, value: str) -> None:
        raise TypeError("the flags of a received frame are shared: not to be changed")


def _fresh_flags(shared: Flags) -> Flags:
    flags = Flags.__new__(Flags)
    flags._valid_flags = shared._valid_flags
    flags._flags = set(shared._flags)
    return flags


class _FrameMaker:
    """How the lean parser builds one type of frame: hyperframe's class, the flags
    each flag byte sets, and the stream-id rule hyperframe's ``__init__`` checks.
    The frame built has the attributes hyperframe's constructor and ``parse_body``
    give it; only DATA and HEADERS without PADDED or PRIORITY skip ``parse_body``
    (their body is the payload as it is)."""

    __slots__ = ("cls", "flags", "stream", "defaults")

    def __init__(self, cls: type[Frame], defaults: dict[str, Any]) -> None:
        self.cls = cls
        valid = {flag.name for flag in cls.defined_flags}
        self.flags: list[Flags] = []
        for byte in range(256):
            flags = _SharedFlags.__new__(_SharedFlags)
            flags._valid_flags = valid
            flags._flags = {flag.name for flag in cls.defined_flags if byte & flag.bit}
            self.flags.append(flags)
        # 1: stream id must be non-zero, 0: must be zero, None: either
        self.stream = {"has-stream": 1, "no-stream": 0}.get(cls.stream_association or "")
        self.defaults = defaults


_MAKERS: dict[int, _FrameMaker] = {
    maker.cls.type: maker for maker in (  # type: ignore[misc]
        _FrameMaker(DataFrame, {"pad_length": 0}),
        _FrameMaker(HeadersFrame, {"pad_length": 0, "depends_on": 0, "stream_weight": 0,
                                   "exclusive": False}),
        _FrameMaker(RstStreamFrame, {"error_code": 0}),
        _FrameMaker(SettingsFrame, {}),  # ``settings`` is a new dict per frame
        _FrameMaker(PingFrame, {"opaque_data": b""}),
        _FrameMaker(WindowUpdateFrame, {"window_increment": 0}),
        _FrameMaker(ContinuationFrame, {}),
    )
}
_COPY_LIMIT = 1024  # smaller bodies are sliced off the bytearray; larger ones viewed
# An unpadded DATA payload this big that has not all arrived is received into a buffer
# of its own (``GuardedFrameBuffer.body_target``) instead of the frame buffer.
BODY_MIN = 64 * 1024


def _find_new_bytearray() -> Any:
    """CPython's ``PyByteArray_FromStringAndSize`` through ctypes, or None."""
    try:
        import ctypes

        new = ctypes.pythonapi.PyByteArray_FromStringAndSize
    except (ImportError, AttributeError):  # not CPython, or no ctypes
        return None
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    return new


_NEW_BYTEARRAY = _find_new_bytearray()


def _bytearray_for(size: int) -> bytearray:
    """A bytearray of ``size`` bytes to be overwritten whole before it is read:
    ``PyByteArray_FromStringAndSize(NULL, size)`` leaves it uninitialized, where
    ``bytearray(size)`` zeroes it, touching every page before the peer has sent a
    byte of it."""
    if _NEW_BYTEARRAY is None:
        return bytearray(size)
    body: bytearray = _NEW_BYTEARRAY(None, size)
    return body


class GuardedFrameBuffer(FrameBuffer):
    """h2's frame buffer, checked before it buffers: a frame header declaring more than
    our SETTINGS_MAX_FRAME_SIZE is refused as soon as its 9 bytes arrive (h2 waits for
    the whole declared frame first), and a header block (HEADERS + CONTINUATION) may
    not grow past ``max_header_block`` bytes (h2 only counts its frames).

    The frames gRPC sends all the time (DATA, HEADERS, CONTINUATION, SETTINGS, PING,
    WINDOW_UPDATE, RST_STREAM) are parsed here, leanly: one unpack of the 9-byte
    header and the frame's attributes set directly, with hyperframe's checks (stream
    id rules, body length and padding via its own ``parse_body``) and h2's errors;
    h2's parser (hyperframe's ``__init__`` chain, ``Flags``, ``parse_frame_header``)
    costs several times more. Other frame types go through h2's ``__next__``."""

    def __init__(self, server: bool, max_header_block: int) -> None:
        super().__init__(server=server)
        self.max_header_block = max_header_block
        self._header_block_size = 0
        # A large DATA frame's payload being received (``_start_body``): the frame's
        # stream id, flag byte and payload length, its buffer (the payload, then room
        # for the next frame's header) and how much of that has arrived.
        self._body: bytearray | None = None
        self._body_filled = 0
        self._body_frame = (0, 0, 0)

    def add_data(self, data: Any) -> None:
        """h2's, except that bytes of a large DATA payload go straight into the
        payload's own buffer: into the one being filled, or into a new one when
        ``data`` starts with the header of one that has not all arrived."""
        if self._preamble_len:
            super().add_data(data)
        elif self._body is not None:
            data = self._fill_body(data)
            if data:
                self._data += data
        # data[3]: the frame type; only DATA (0) may start a payload buffer
        elif self._data or len(data) < 9 or data[3] or not self._start_body(memoryview(data)):
            self._data += data

    def body_target(self) -> memoryview | None:
        """Where the rest of a large DATA payload may be received (``recv_into``),
        and the next frame's header after it, or None; ``body_filled(n)`` then says
        how much was. The view must be released before that call."""
        body = self._body
        if body is None:
            return None
        return memoryview(body)[self._body_filled:]

    def body_filled(self, count: int) -> None:
        self._body_filled += count

    def _fill_body(self, data: Any) -> Any:
        """Copy the start of ``data`` into the payload being received; the rest of
        ``data`` (a view) is what follows the payload."""
        body = self._body
        assert body is not None
        filled = self._body_filled
        count = min(self._body_frame[2] - filled, len(data))
        view = memoryview(data)
        body[filled:filled + count] = view[:count]
        self._body_filled = filled + count
        return view[count:] if count < len(data) else b""

    def _start_body(self, view: memoryview) -> bool:
        """If ``view`` starts with the header of a large unpadded DATA frame whose
        payload has not all arrived, take what has into a buffer of the payload's size
        and return True. Checks what ``next_frame`` checks on a header first.

        The buffer is allocated when the header arrives (at most our
        SETTINGS_MAX_FRAME_SIZE, one per connection); memory the OS has not been
        given bytes for stays untouched until they arrive."""
        if self._headers_buffer:  # a header block is open: next_frame raises
            return False
        high, low, frame_type, flag_byte, stream_id = _FRAME_HEADER.unpack_from(view)
        length = (high << 8) + low
        if (frame_type != _DATA or flag_byte & 0x08 or length < BODY_MIN
                or length > self.max_frame_size or len(view) >= 9 + length
                or not stream_id & 0x7FFFFFFF):
            return False
        self._body = body = _bytearray_for(length + 9)  # + the next frame's header
        self._body_frame = (stream_id & 0x7FFFFFFF, flag_byte, length)
        arrived = len(view) - 9
        body[:arrived] = view[9:]
        self._body_filled = arrived
        return True

    def _take_body(self) -> Any:
        """The DATA frame whose payload has all arrived; its payload (a bytearray
        nothing else refers to, never changed again) is its ``data``."""
        body = self._body
        assert body is not None
        self._body = None
        stream_id, flag_byte, length = self._body_frame
        if self._body_filled > length:  # the start of the next frame, read with it
            self._data[:0] = body[length:self._body_filled]
        try:
            del body[length:]  # within its allocation: no copy
        except BufferError:  # a body_target view not released: the payload copied
            body = bytearray(memoryview(body)[:length])
        frame: Any = DataFrame.__new__(DataFrame)
        frame.stream_id = stream_id
        frame.flags = _MAKERS[_DATA].flags[flag_byte]
        frame.pad_length = 0
        frame.body_len = length
        frame.data = body
        return frame

    def __next__(self) -> Any:
        frame = self.next_frame()
        if frame is None:
            raise StopIteration
        return frame

    def next_frame(self) -> Any:
        """The next complete frame, or None (``__next__`` without StopIteration)."""
        if self._body is not None:
            if self._body_filled < self._body_frame[2]:
                return None
            return self._take_body()
        data = self._data
        while True:
            if len(data) < 9:
                return None
            high, low, frame_type, flag_byte, stream_id = _FRAME_HEADER.unpack_from(data)
            length = (high << 8) + low
            if length > self.max_frame_size:
                raise h2.exceptions.FrameTooLargeError(
                    f"frame of {length} bytes declared, max {self.max_frame_size}")
            maker = _MAKERS.get(frame_type)
            if maker is None:
                try:
                    return super().__next__()
                except StopIteration:
                    return None
            stream_id &= 0x7FFFFFFF
            if maker.stream is not None and bool(stream_id) != maker.stream:
                name = maker.cls.__name__
                raise h2.exceptions.ProtocolError(
                    "Received frame with invalid header: "
                    + (f"Stream ID must be non-zero for {name}" if maker.stream else
                       f"Stream ID must be zero for {name} with stream_id={stream_id}"))
            end = 9 + length
            if len(data) < end:
                if length >= BODY_MIN and frame_type == _DATA and \
                        not self._headers_buffer:
                    with memoryview(data) as view:
                        started = self._start_body(view)
                    if started:
                        del data[:]
                return None
            frame: Any = maker.cls.__new__(maker.cls)
            frame.stream_id = stream_id
            frame.flags = maker.flags[flag_byte]
            if frame_type == _DATA and not flag_byte & 0x08:  # the body is the payload
                frame.pad_length = 0
                frame.body_len = length
                frame.data = bytes(data[9:end]) if length < _COPY_LIMIT else _copy(data, end)
            elif frame_type == _HEADERS and not flag_byte & 0x28:  # neither does PRIORITY
                frame.pad_length = frame.depends_on = frame.stream_weight = 0
                frame.exclusive = False
                frame.body_len = length
                frame.data = bytes(data[9:end]) if length < _COPY_LIMIT else _copy(data, end)
            else:
                frame.__dict__.update(maker.defaults)
                if frame_type == _SETTINGS:
                    frame.settings = {}
                frame.body_len = 0
                _parse_body(frame, data, end)
            del data[:end]
            if frame_type == _HEADERS and not flag_byte & 0x04:
                frame.flags = _fresh_flags(frame.flags)  # END_HEADERS is added to it
            if self._headers_buffer or (frame_type == _HEADERS and not flag_byte & 0x04):
                frame = self._update_header_buffer(frame)
                if frame is None:
                    continue
            return frame

    def _update_header_buffer(self, f: Any) -> Any:
        if self._headers_buffer or (f is not None and f.type in (_HEADERS, _PUSH_PROMISE)
                                    and "END_HEADERS" not in f.flags):
            self._header_block_size = (self._header_block_size if self._headers_buffer
                                       else 0) + len(getattr(f, "data", b""))
            if self._header_block_size > self.max_header_block:
                raise h2.exceptions.DenialOfServiceError(
                    f"header block over {self.max_header_block} bytes")
        return super()._update_header_buffer(f)


def _copy(data: bytearray, end: int) -> bytes:
    """The payload of a large frame, copied once (a bytearray slice is a copy)."""
    with memoryview(data) as view:
        return view[9:end].tobytes()


def _parse_body(frame: Any, data: bytearray, end: int) -> None:
    """hyperframe's ``parse_body`` on a view of the buffer, with h2's errors."""
    with memoryview(data) as view, view[9:end] as body:
        try:
            frame.parse_body(body)  # keeps no view: what it keeps is copied (tobytes)
        except InvalidDataError as err:
            raise h2.exceptions.ProtocolError(
                "Received frame with non-compliant data") from err
        except InvalidFrameError as err:
            raise h2.exceptions.FrameDataMissingError(
                "Frame data missing or invalid") from err


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
        # send_headers' view of header blocks seen before (_learn_headers)
        self._header_info: dict[tuple[Any, ...], _HeaderInfo] = {}
        self._header_info_bytes = 0
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
        # Received headers reach events as decoded (_receive_headers_frame).
        self._plain_inbound_headers = not (config.normalize_inbound_headers
                                           or config.validate_inbound_headers
                                           or isinstance(config.header_encoding, str))
        self._keep_open_after_goaway()
        # Read once: send_headers' own path needs h2's outbound header checks off and
        # knows which side it is on (our configurations never change after this).
        self._client_side = bool(config.client_side)
        self._plain_outbound = not (config.validate_outbound_headers
                                    or config.normalize_outbound_headers)

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
            _header_info={}, _header_info_bytes=0,
            # By name, so that our overrides (_receive_headers_frame...) are the ones.
            _frame_dispatch_table={kind: getattr(clone, receive.__name__)
                                   for kind, receive in _h2_dispatch().items()})
        clone._keep_open_after_goaway()
        return clone

    # -- what h2 reads ---------------------------------------------------------------

    @property
    def open_inbound_streams(self) -> int:
        count = self._open_streams(int(not self.config.client_side))  # purges closed ones
        return 0 if self.streams_limited_by_us else count

    def receive_data(self, data: Any) -> list[h2.events.Event]:
        """h2's, without its trace log of every read and with no StopIteration
        per read (``GuardedFrameBuffer.next_frame``)."""
        buffer: GuardedFrameBuffer = self.incoming_buffer  # type: ignore[assignment]
        buffer.max_frame_size = self.max_inbound_frame_size
        buffer.add_data(data)
        return self._receive_frames(buffer)

    def body_target(self) -> memoryview | None:
        """Where the rest of a large DATA payload being received may be read into
        (``socket.recv_into``), skipping the frame buffer; None when no payload is
        being received. Then ``receive_into_body`` with the count read."""
        buffer: GuardedFrameBuffer = self.incoming_buffer  # type: ignore[assignment]
        return buffer.body_target()

    def receive_into_body(self, count: int) -> list[h2.events.Event]:
        """``receive_data`` for ``count`` bytes read into ``body_target()``."""
        buffer: GuardedFrameBuffer = self.incoming_buffer  # type: ignore[assignment]
        buffer.body_filled(count)
        return self._receive_frames(buffer)

    def _receive_frames(self, buffer: GuardedFrameBuffer) -> list[h2.events.Event]:
        events: list[h2.events.Event] = []
        receive = self._receive_frame
        try:
            while (frame := buffer.next_frame()) is not None:
                events += receive(frame)
        except InvalidPaddingError as err:
            self._terminate_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
            raise h2.exceptions.ProtocolError("Received frame with invalid padding.") from err
        except h2.exceptions.ProtocolError as err:
            self._terminate_connection(err.error_code)
            raise
        return events

    def _receive_headers_frame(self, frame: Any) -> Any:
        """h2's, shortened for the HEADERS gRPC sends all the time (a server's new
        stream, a client's response headers and trailers), when h2 neither normalizes
        nor validates received headers (the transport's configuration): no header
        validation flags built for nothing, no stream-id enum built per frame, the
        stream opened inline. Same checks, state machines, events and errors as h2;
        anything else (PRIORITY, a stream the peer may not open, h2 counting our
        MAX_CONCURRENT_STREAMS) goes to h2's."""
        config = self.config
        flags = frame.flags._flags  # the set behind Flags.__contains__, a Python call
        if not self._plain_inbound_headers or "PRIORITY" in flags:
            return super()._receive_headers_frame(frame)
        stream_id = frame.stream_id
        streams = self.streams
        stream = streams.get(stream_id)
        if stream is None:
            if not self.streams_limited_by_us or stream_id % 2 == config.client_side:
                return super()._receive_headers_frame(frame)
            # h2's open_inbound_streams: forget closed streams; the count is ours to
            # check (streams_limited_by_us), h2's limit is then 1 > max.
            closed = [i for i, each in streams.items() if each.state_machine.state == _CLOSED]
            for i in closed:
                self._closed_streams[i] = streams.pop(i).closed_by
            max_open = self.local_settings.max_concurrent_streams
            if max_open < 1:
                raise h2.exceptions.TooManyStreamsError(
                    f"Max inbound streams is {max_open}, 0 open")
        headers = h2.connection._decode_headers(self.decoder, frame.data)
        # an open connection takes HEADERS and stays as it is (h2's table)
        events = [] if self.state_machine.state in _CONNECTION_OPEN else \
            self.state_machine.process_input(_RECV_HEADERS)
        if stream is None:  # h2's _begin_new_stream, for a stream id of the peer's
            highest = self.highest_inbound_stream_id
            if stream_id <= highest:
                raise h2.exceptions.StreamIDTooLowError(stream_id, highest)
            stream = h2.stream.H2Stream(
                stream_id, config=config,
                inbound_window_size=self.local_settings.initial_window_size,
                outbound_window_size=self.remote_settings.initial_window_size)
            stream.max_outbound_frame_size = self.max_outbound_frame_size
            streams[stream_id] = stream
            self.highest_inbound_stream_id = stream_id
        end_stream = "END_STREAM" in flags
        if is_informational_response(headers):
            frames, stream_events = stream.receive_headers(headers, end_stream, None)
            return frames, events + stream_events
        # h2's H2Stream.receive_headers without the header processing it skips
        state_machine = stream.state_machine
        stream_events = state_machine.process_input(_STREAM_RECV_HEADERS)
        headers_event: Any = stream_events[0]
        if end_stream:
            ended = state_machine.process_input(_STREAM_RECV_END_STREAM)
            headers_event.stream_ended = ended[0]
            stream_events += ended
        stream._initialize_content_length(headers)
        if not end_stream and type(headers_event) is h2.events.TrailersReceived:
            raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set")
        headers_event.headers = list(headers)
        return [], events + stream_events

    def _receive_data_frame(self, frame: Any) -> Any:
        """h2's, for DATA on a stream h2 still holds open, on an open connection
        (which takes DATA and stays as it is); anything else goes to h2's."""
        stream = self.streams.get(frame.stream_id)
        if (stream is None or stream.state_machine.state == _CLOSED
                or self.state_machine.state not in _CONNECTION_OPEN):
            return super()._receive_data_frame(frame)
        flags = frame.flags._flags  # the set behind Flags.__contains__, a Python call
        length = len(frame.data)  # hyperframe's flow_controlled_length
        if "PADDED" in flags:
            length += frame.pad_length + 1
        window = self._inbound_flow_control_window_manager  # its window_consumed, inline
        window.current_window_size -= length
        if window.current_window_size < 0:
            raise h2.exceptions.FlowControlError("Flow control window shrunk below 0")
        machine = stream.state_machine
        state = machine.state
        if ((state is _OPEN or state is _HALF_CLOSED_LOCAL) and "END_STREAM" not in flags
                and machine.headers_received and stream._expected_content_length is None):
            # H2Stream.receive_data where it changes nothing but the windows and the
            # count of bytes: RECV_DATA leaves OPEN and HALF_CLOSED_LOCAL as they are
            # (data_received only checks headers_received and makes the event), no
            # content-length to check, no END_STREAM; the debug log h2's makes is off
            # (we pass H2Configuration no logger).
            window = stream._inbound_window_manager
            window.current_window_size -= length
            if window.current_window_size < 0:
                raise h2.exceptions.FlowControlError("Flow control window shrunk below 0")
            data = frame.data
            stream._actual_content_length += len(data)
            return (), [_DataReceived(stream_id=frame.stream_id, data=data,
                                      flow_controlled_length=length)]
        try:
            return stream.receive_data(frame.data, "END_STREAM" in flags, length)
        except h2.exceptions.StreamClosedError as exc:  # half-closed by the peer
            return self._handle_data_on_closed_stream([], exc, frame)

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
        if frames:
            self._prepare_for_sending(frames)
        return events

    # -- what we ask ------------------------------------------------------------------

    def count_open_inbound(self, before: int | None = None) -> int:
        """Streams the peer opened that are not closed (h2 purges closed ones here);
        with ``before``, only those opened before that stream id."""
        remainder = int(not self.config.client_side)
        if before is None:
            return self._open_streams(remainder)
        is_open = h2.stream.STREAM_OPEN  # what H2Stream.open reads, by state
        count = 0
        for stream_id, stream in self.streams.items():
            if stream_id < before and stream_id % 2 == remainder and \
                    is_open[stream.state_machine.state]:
                count += 1
        return count

    def sending_open(self, stream_id: int) -> bool:
        """True while we may still send on ``stream_id`` (not closed, not forgotten)."""
        stream = self.streams.get(stream_id)
        return stream is not None and not stream.closed

    def has_output(self) -> bool:
        """Whether h2 holds bytes to send. Read without the transport lock: a thread
        that adds output flushes it itself, so a stale False costs nothing."""
        return bool(self._data_to_send) or bool(self._parts)

    # -- what we send -----------------------------------------------------------------

    def send_headers(self, stream_id: int, headers: Any, end_stream: bool = False,
                     priority_weight: int | None = None, priority_depends_on: int | None = None,
                     priority_exclusive: bool | None = None) -> None:
        """h2's, with the common cases done here without h2's frame objects: a request
        opening a client stream, response headers, trailers (with END_STREAM), as a
        list or tuple of two-tuples, on an open connection (or a client's first
        request), h2's outbound header checks off. Each advances h2's connection and
        stream state exactly as h2's ``send_headers`` would (``H2Connection`` and
        ``H2Stream.send_headers``, the state machines' SEND_HEADERS/SEND_END_STREAM
        transitions) and queues the same bytes; anything else, and every case where
        h2 would raise, is h2's own (it raises the same error after the same state
        changes). h2 logs nothing here."""
        if (priority_weight is None and priority_depends_on is None
                and priority_exclusive is None and headers
                and (type(headers) is list or type(headers) is tuple)
                and (self.state_machine.state in _CONNECTION_OPEN
                     or self.state_machine.state is _IDLE and self._client_side)):
            if self._send_headers_fast(stream_id, headers, end_stream):
                return
        super().send_headers(stream_id, headers, end_stream, priority_weight,
                             priority_depends_on, priority_exclusive)

    def _send_headers_fast(self, stream_id: int, headers: Any, end_stream: bool) -> bool:
        """``send_headers`` done here; False (nothing changed) leaves it to h2."""
        if not self._plain_outbound:
            return False
        key = headers if type(headers) is tuple else tuple(headers)
        try:
            info = self._header_info.get(key)
        except TypeError:  # a field that is not a tuple: h2's to judge
            return False
        if info is None:
            info = self._learn_headers(key)
            if info is None:
                return False
        plain, informational, authority, method = info
        if not plain:
            return False
        stream = self.streams.get(stream_id)
        if stream is None:  # a new stream: only a client's request here
            if not self._client_side or informational:
                return False
            # h2 counts (and purges) open streams against the peer's limit first.
            if self.open_outbound_streams + 1 > self.remote_settings.max_concurrent_streams:
                return False
            if self.state_machine.state is _IDLE:  # the first request opens the connection
                self.state_machine.state = ConnectionState.CLIENT_OPEN
            # Raises as h2 would (stream id too low, wrong parity), before any change.
            stream = self._begin_new_stream(stream_id, AllowedStreamIDs.ODD)
            machine = stream.state_machine
            # IDLE --SEND_HEADERS--> OPEN (request_sent)
            machine.state = _OPEN
            machine.client = True
            machine.headers_sent = True
        else:
            machine = stream.state_machine
            state = machine.state
            if (state is not _OPEN and state is not _HALF_CLOSED_REMOTE
                    or self.state_machine.state is _IDLE):
                return False
            if machine.headers_sent:  # trailers: must end the stream, once
                if machine.trailers_sent or not end_stream or (
                        informational and not machine.client):
                    return False
                machine.trailers_sent = True  # SEND_HEADERS (response_sent), same state
            else:  # the response (a client's stream never gets here unsent)
                if machine.client is not False or informational:
                    return False
                machine.headers_sent = True  # SEND_HEADERS (response_sent), same state
        block = self.encoder.encode(key)
        if end_stream:
            _sent_end_stream(machine)
        if machine.client and stream._authority is None:
            stream._authority = authority
        stream.request_method = method
        self._queue_header_block(stream_id, block, end_stream,
                                 stream.max_outbound_frame_size or 0)
        return True

    def _learn_headers(self, key: tuple[Any, ...]) -> _HeaderInfo | None:
        """h2's view of a header block (see ``_HeaderInfo``), remembered; None if h2
        would fail on it (h2 then raises where it would)."""
        try:
            fields = utf8_encode_headers(key)
            cost = sum(len(field[0]) + len(field[1]) + 32 for field in fields)
        except Exception:
            return None
        # hpack codes (name, value, sensitive) triples itself; h2 drops the third item.
        plain = all(isinstance(field, HeaderTuple) or (type(field) is tuple and len(field) == 2)
                    for field in key)
        info = (plain, is_informational_response(fields), authority_from_headers(fields),
                extract_method_header(fields))
        if cost <= _INFO_MAX_BLOCK:
            if (len(self._header_info) >= _INFO_MAX_ENTRIES
                    or self._header_info_bytes + cost > _INFO_MAX_BYTES):
                self._header_info.clear()
                self._header_info_bytes = 0
            self._header_info[key] = info
            self._header_info_bytes += cost
        return info

    def _queue_header_block(self, stream_id: int, block: bytes, end_stream: bool,
                            max_size: int) -> None:
        """HEADERS (and CONTINUATIONs past ``max_size``), as hyperframe serialises
        h2's frames: END_STREAM on the first, END_HEADERS on the last."""
        out = self._data_to_send
        stream_id &= 0x7FFFFFFF
        length = len(block)
        flags = _END_STREAM if end_stream else 0
        if length <= max_size:
            out += _FRAME_HEADER.pack(length >> 8, length & 0xFF, _HEADERS,
                                      flags | _END_HEADERS, stream_id)
            out += block
            return
        kind = _HEADERS
        for start in range(0, length, max_size):
            chunk = block[start : start + max_size]
            size = len(chunk)
            if start + max_size >= length:
                flags |= _END_HEADERS
            out += _FRAME_HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream_id)
            out += chunk
            kind, flags = _CONTINUATION, 0

    def local_flow_control_window(self, stream_id: int) -> int:
        """h2's: a known stream's window within the connection's (the same attributes
        read), without h2's lookup helper; an unknown id is h2's own (it raises)."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return super().local_flow_control_window(stream_id)
        window: int = stream.outbound_flow_control_window
        connection: int = self.outbound_flow_control_window
        return window if window < connection else connection

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False,
                  pad_length: Any = None) -> None:
        """h2's. Unpadded DATA on an open stream within its window is done here, without
        h2's frame objects: the same state change (SEND_DATA, SEND_END_STREAM), the
        same windows debited, the same bytes queued; a payload of ``ZERO_COPY_DATA``
        bytes or more queues as a part of its own (``take_output``), not copied.
        Anything else, and every case where h2 raises, is h2's own."""
        stream = self.streams.get(stream_id)
        size = len(data)
        if (stream is not None and pad_length is None
                and self.state_machine.state in _CONNECTION_OPEN
                and (size <= stream.outbound_flow_control_window
                     and size <= self.outbound_flow_control_window or not size)
                and size <= self.max_outbound_frame_size
                and (type(data) is bytes or type(data) is memoryview and data.nbytes == size)):
            machine = stream.state_machine
            state = machine.state
            if state is _OPEN or state is _HALF_CLOSED_REMOTE:
                if end_stream:
                    _sent_end_stream(machine)
                stream.outbound_flow_control_window -= size
                self.outbound_flow_control_window -= size
                header = _FRAME_HEADER.pack(size >> 8, size & 0xFF, _DATA,
                                            _END_STREAM if end_stream else 0,
                                            stream_id & 0x7FFFFFFF)
                if size < ZERO_COPY_DATA:
                    out = self._data_to_send
                    out += header
                    out += data
                else:
                    self._queue_apart(header, data)
                return
        # h2's own; a large view passes through h2 wrapped, as h2's stream copies a
        # ``memoryview`` (``tobytes``) and only ever takes the length of anything else.
        if type(data) is memoryview and pad_length is None and size >= ZERO_COPY_DATA:
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
            flags = 0x01 if "END_STREAM" in frame.flags else 0
            self._queue_apart(_FRAME_HEADER.pack((length >> 8) & 0xFFFF, length & 0xFF, _DATA,
                                                 flags, frame.stream_id & 0x7FFFFFFF), data)
            out = self._data_to_send
        assert all(f.body_len <= self.max_outbound_frame_size for f in frames)

    def _queue_apart(self, header: bytes, payload: Any) -> None:
        """A large DATA frame's header and payload, queued as parts of their own after
        what is buffered (``take_output``): the payload is not copied."""
        if self._data_to_send:
            self._parts.append(self._data_to_send)
            self._data_to_send = bytearray()
        self._parts.append(header)
        self._parts.append(payload)

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


def _sent_end_stream(machine: Any) -> None:
    """An ``H2StreamStateMachine``'s SEND_END_STREAM from OPEN or HALF_CLOSED_REMOTE."""
    if machine.state is _OPEN:
        machine.state = _HALF_CLOSED_LOCAL
    else:
        machine.state = _CLOSED
        machine.stream_closed_by = StreamClosedBy.SEND_END_STREAM


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
