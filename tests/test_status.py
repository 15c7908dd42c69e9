"""Status codes, the error hierarchy, ``grpc-message`` and HTTP/RST mappings (PROTOCOL.md §4-5)."""

from __future__ import annotations

import re

import pytest

from dubbo.status import (
    CancelledError,
    DeadlineExceededError,
    ProtocolError,
    RpcError,
    SendStalledError,
    StatusCode,
    UnavailableError,
    decode_grpc_message,
    encode_grpc_message,
    error_for,
    status_from_http,
    status_from_rst,
)

# -- StatusCode --------------------------------------------------------------------------

EXPECTED_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


def test_seventeen_codes_with_grpc_numbers():
    assert len(StatusCode) == 17
    assert {c.name: c.value for c in StatusCode} == EXPECTED_CODES


def test_codes_are_ints_for_the_wire():
    assert str(int(StatusCode.UNIMPLEMENTED)) == "12"
    assert StatusCode.INTERNAL == 13


@pytest.mark.parametrize("number", range(17))
def test_from_wire_decimal_strings(number):
    assert StatusCode.from_wire(str(number)) is StatusCode(number)


@pytest.mark.parametrize("number", range(17))
def test_from_wire_bytes(number):
    assert StatusCode.from_wire(str(number).encode()) is StatusCode(number)


def test_from_wire_b5():
    assert StatusCode.from_wire(b"5") is StatusCode.NOT_FOUND


def test_from_wire_int():
    assert StatusCode.from_wire(14) is StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "value",
    ["", "abc", "17", "-1", "99", "1.0", "0x1", b"", b"garbage", b"\xff", b"17", None, "OK"],
)
def test_from_wire_garbage_is_unknown(value):
    assert StatusCode.from_wire(value) is StatusCode.UNKNOWN


# -- RpcError and subclasses ------------------------------------------------------------


def test_rpc_error_positional():
    err = RpcError(StatusCode.NOT_FOUND, "no such thing")
    assert err.code is StatusCode.NOT_FOUND
    assert err.details == "no such thing"
    assert err.trailing_metadata == []


def test_rpc_error_keywords():
    err = RpcError(code=StatusCode.ABORTED, details="conflict", trailing_metadata=[("k", "v")])
    assert err.code is StatusCode.ABORTED
    assert err.details == "conflict"
    assert err.trailing_metadata == [("k", "v")]


def test_rpc_error_initial_metadata_keyword():
    err = RpcError(StatusCode.INTERNAL, "x", initial_metadata=[("a", "b")])
    assert err.initial_metadata == [("a", "b")]


def test_rpc_error_code_from_int():
    err = RpcError(7, "nope")
    assert err.code is StatusCode.PERMISSION_DENIED


def test_rpc_error_defaults():
    err = RpcError()
    assert err.code is StatusCode.UNKNOWN
    assert err.details == ""
    assert err.trailing_metadata == []
    assert err.initial_metadata == []


def test_rpc_error_none_details_become_empty():
    assert RpcError(StatusCode.INTERNAL, None).details == ""


def test_rpc_error_is_an_exception_with_readable_str():
    err = RpcError(StatusCode.UNIMPLEMENTED, "method not found")
    assert isinstance(err, Exception)
    assert "UNIMPLEMENTED" in str(err)
    assert "method not found" in str(err)
    with pytest.raises(RpcError):
        raise err


def test_trailing_metadata_is_copied_to_a_list():
    md = (("a", "1"), ("b", "2"))
    err = RpcError(StatusCode.INTERNAL, "", md)
    assert err.trailing_metadata == [("a", "1"), ("b", "2")]


@pytest.mark.parametrize(
    "cls, code",
    [
        (CancelledError, StatusCode.CANCELLED),
        (DeadlineExceededError, StatusCode.DEADLINE_EXCEEDED),
        (UnavailableError, StatusCode.UNAVAILABLE),
        (ProtocolError, StatusCode.INTERNAL),
    ],
)
def test_subclass_default_codes(cls, code):
    err = cls()
    assert err.code is code
    assert isinstance(err, RpcError)


def test_subclass_explicit_code_wins():
    assert ProtocolError(StatusCode.RESOURCE_EXHAUSTED, "big").code is StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    "code, cls",
    [
        (StatusCode.CANCELLED, CancelledError),
        (StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (StatusCode.UNAVAILABLE, UnavailableError),
    ],
)
def test_error_for_picks_subclass(code, cls):
    err = error_for(code, "details", [("k", "v")], initial_metadata=[("i", "j")])
    assert type(err) is cls
    assert isinstance(err, RpcError)
    assert err.code is code
    assert err.details == "details"
    assert err.trailing_metadata == [("k", "v")]
    assert err.initial_metadata == [("i", "j")]


@pytest.mark.parametrize(
    "code",
    [c for c in StatusCode
     if c not in (StatusCode.CANCELLED, StatusCode.DEADLINE_EXCEEDED, StatusCode.UNAVAILABLE)],
)
def test_error_for_other_codes_is_plain_rpc_error(code):
    err = error_for(code, "d")
    assert type(err) is RpcError
    assert err.code is code


def test_error_for_deadline_caught_as_rpc_error():
    with pytest.raises(RpcError) as info:
        raise error_for(StatusCode.DEADLINE_EXCEEDED, "too slow")
    assert isinstance(info.value, DeadlineExceededError)
    assert info.value.details == "too slow"


# -- grpc-message encoding ---------------------------------------------------------------


def test_printable_ascii_unchanged():
    text = "".join(chr(c) for c in range(0x20, 0x7F) if c != ord("%"))
    assert encode_grpc_message(text) == text


@pytest.mark.parametrize("text", ["a+b", "path/to/x", "host:port", "a,b?c#d", "x y", "~!@$^&*()"])
def test_chars_grpc_js_decodeuri_cannot_undo_are_not_escaped(text):
    # grpc-js decodes with decodeURI, which leaves %2B %2F %3A %2C %3F %23 as-is (§10).
    assert encode_grpc_message(text) == text


def test_percent_escaped():
    assert encode_grpc_message("100%") == "100%25"
    assert encode_grpc_message("%25") == "%2525"


def test_non_ascii_utf8_uppercase_hex():
    assert encode_grpc_message("é") == "%C3%A9"
    assert encode_grpc_message("日本") == "%E6%97%A5%E6%9C%AC"
    assert encode_grpc_message("😀") == "%F0%9F%98%80"


@pytest.mark.parametrize(
    "char, escaped",
    [("\n", "%0A"), ("\r", "%0D"), ("\t", "%09"), ("\x00", "%00"), ("\x7f", "%7F")],
)
def test_control_chars_escaped(char, escaped):
    assert encode_grpc_message(f"a{char}b") == f"a{escaped}b"


def test_mixed_message():
    assert encode_grpc_message("bad: café 50%\n") == "bad: caf%C3%A9 50%25%0A"


def test_encoded_output_is_header_safe():
    encoded = encode_grpc_message("x\u2028\x00\xff\n\r%é日😀")
    assert all(0x20 <= ord(c) <= 0x7E for c in encoded)
    # every '%' starts an uppercase %XX escape
    assert re.fullmatch(r"(?:[^%]|%[0-9A-F]{2})*", encoded)


def test_empty_message():
    assert encode_grpc_message("") == ""
    assert decode_grpc_message(b"") == ""
    assert decode_grpc_message("") == ""


# -- grpc-message decoding ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "100% sure",
        "%25 literal",
        "%zz",
        "a+b c/d:e",
        "line1\nline2\r\n\ttab",
        "café naïve",
        "日本語のエラー",
        "emoji 😀🎉",
        "\x00\x01\x7f",
        "mixed % é %41 +",
        "".join(chr(c) for c in range(0, 0x250)),
    ],
)
def test_round_trip(text):
    encoded = encode_grpc_message(text)
    assert decode_grpc_message(encoded) == text
    assert decode_grpc_message(encoded.encode("ascii")) == text


def test_decodes_percent_sequences():
    assert decode_grpc_message(b"caf%C3%A9") == "café"
    assert decode_grpc_message("caf%c3%a9") == "café"  # lowercase hex too


def test_decodes_encodeuri_spaces():
    # grpc-js's server encodes with encodeURI (spaces as %20): decode fully (§10).
    assert decode_grpc_message(b"Not%20found%3A%20x") == "Not found: x"


def test_plus_is_not_a_space():
    assert decode_grpc_message(b"a+b") == "a+b"


def test_raw_utf8_bytes_java_style():
    # Java 3.3 and apache-dubbo send grpc-message as raw UTF-8 (§4, §9).
    raw = "Invoke method failed: 参数错误 café".encode()
    assert decode_grpc_message(raw) == "Invoke method failed: 参数错误 café"


def test_raw_utf8_with_literal_percent():
    raw = "50% 完成".encode()
    assert decode_grpc_message(raw) == "50% 完成"


def test_raw_utf8_str_input():
    assert decode_grpc_message("ошибка") == "ошибка"


@pytest.mark.parametrize(
    "raw",
    [b"%", b"%%", b"%4", b"%G1", b"100%", b"%zz%", b"trail%", b"%E2%82", b"%FF%FE",
     b"%C3", b"\xff\xfe", b"ok \xc3", b"\xed\xa0\x80", b"%ED%A0%80"],
)
def test_bad_input_never_raises(raw):
    out = decode_grpc_message(raw)
    assert isinstance(out, str)
    out2 = decode_grpc_message(raw.decode("latin-1"))
    assert isinstance(out2, str)


def test_bad_percent_sequences_kept_literally():
    assert decode_grpc_message(b"100%") == "100%"
    assert decode_grpc_message(b"%zz") == "%zz"
    assert decode_grpc_message(b"50%-off") == "50%-off"


def test_invalid_utf8_becomes_replacement_chars():
    assert decode_grpc_message(b"%E2%82") == "\ufffd"
    assert decode_grpc_message(b"ok \xff") == "ok \ufffd"
    assert decode_grpc_message(b"a%FFb") == "a\ufffdb"


def test_valid_parts_survive_invalid_parts():
    out = decode_grpc_message(b"caf%C3%A9 \xff end")
    assert out.startswith("café ")
    assert out.endswith(" end")
    assert "\ufffd" in out


# -- HTTP status mapping -----------------------------------------------------------------


@pytest.mark.parametrize(
    "http, code",
    [
        (400, StatusCode.INTERNAL),
        (401, StatusCode.UNAUTHENTICATED),
        (403, StatusCode.PERMISSION_DENIED),
        (404, StatusCode.UNIMPLEMENTED),  # not NOT_FOUND (dubbo-python's deviation)
        (429, StatusCode.UNAVAILABLE),
        (431, StatusCode.INTERNAL),
        (502, StatusCode.UNAVAILABLE),
        (503, StatusCode.UNAVAILABLE),
        (504, StatusCode.UNAVAILABLE),
        (200, StatusCode.UNKNOWN),
        (500, StatusCode.UNKNOWN),
        (405, StatusCode.UNKNOWN),
        (415, StatusCode.UNKNOWN),
        (301, StatusCode.UNKNOWN),
    ],
)
def test_status_from_http(http, code):
    assert status_from_http(http) is code


# -- RST_STREAM mapping ------------------------------------------------------------------


@pytest.mark.parametrize(
    "error_code, code",
    [
        (0x8, StatusCode.CANCELLED),  # CANCEL
        (0x7, StatusCode.UNAVAILABLE),  # REFUSED_STREAM
        (0xB, StatusCode.RESOURCE_EXHAUSTED),  # ENHANCE_YOUR_CALM
        (0xC, StatusCode.PERMISSION_DENIED),  # INADEQUATE_SECURITY
    ],
)
def test_status_from_rst_special(error_code, code):
    assert status_from_rst(error_code) is code


@pytest.mark.parametrize("error_code", [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x9, 0xA, 0xD, 0xFF])
def test_status_from_rst_others_internal(error_code):
    assert status_from_rst(error_code) is StatusCode.INTERNAL


def test_status_from_rst_accepts_int_enums():
    import enum

    class ErrorCodes(enum.IntEnum):  # like h2.errors.ErrorCodes
        CANCEL = 0x8
        NO_ERROR = 0x0

    assert status_from_rst(ErrorCodes.CANCEL) is StatusCode.CANCELLED
    assert status_from_rst(ErrorCodes.NO_ERROR) is StatusCode.INTERNAL


@pytest.mark.parametrize("cls", [CancelledError, DeadlineExceededError, UnavailableError,
                                 SendStalledError])
def test_an_error_class_named_for_a_code_carries_only_that_code(cls: type[RpcError]) -> None:
    # Whoever catches UnavailableError must be able to retry: it is never INTERNAL.
    assert cls(details="x").code is cls.default_code
    assert cls(cls.default_code, "x").code is cls.default_code
    other = StatusCode.INTERNAL
    with pytest.raises(ValueError, match="error_for"):
        cls(other, "x")
    assert RpcError(other, "x").code is other  # the base class takes any code
    assert error_for(cls.default_code, "x").code is cls.default_code
