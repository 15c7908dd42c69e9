"""Header blocks: metadata, request/response heads, peer quirks (PROTOCOL.md §2, §4, §9-12)."""

from __future__ import annotations

import base64

import pytest

from dubbo.status import RpcError, StatusCode
from dubbo.wire.deadline import parse_timeout
from dubbo.wire.metadata import (
    USER_AGENT,
    RequestHead,
    RequestRejected,
    ResponseStatus,
    check_response_headers,
    decode_metadata,
    encode_metadata,
    parse_request_headers,
    request_headers,
    response_headers,
    status_from_headers,
    trailers,
)


def b(headers):
    """Headers as the transport receives them: (bytes, bytes) pairs."""
    return [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers]


def keys(headers):
    return [k for k, _ in headers]


# -- encode_metadata ---------------------------------------------------------------------


def test_encode_none_and_empty():
    assert encode_metadata(None) == []
    assert encode_metadata([]) == []


def test_encode_lowercases_keys():
    assert encode_metadata([("X-Request-ID", "abc")]) == [("x-request-id", "abc")]


def test_encode_keeps_order_and_duplicates():
    md = [("b", "1"), ("a", "2"), ("b", "3")]
    assert encode_metadata(md) == md


def test_encode_allowed_key_chars():
    assert encode_metadata([("a0_.-z9", "v")]) == [("a0_.-z9", "v")]


def test_encode_accepts_any_iterable_of_pairs():
    assert encode_metadata(iter([("k", "v")])) == [("k", "v")]


@pytest.mark.parametrize(
    "key",
    ["", "has space", ":path", ":authority", "ключ", "caf\u00e9", "a/b", "a=b", "a\tb",
     "k\r\nx-injected", "a\x00", "tab\t"],
)
def test_encode_rejects_invalid_keys(key):
    with pytest.raises(ValueError):
        encode_metadata([(key, "v")])


@pytest.mark.parametrize("key", ["foo\n", "te\n", "grpc-status\n"])
def test_encode_rejects_key_with_trailing_newline(key):
    # re's '$' also matches just before a trailing newline: the check must not let a
    # newline-terminated name through (nor let it dodge the reserved-name check).
    with pytest.raises(ValueError):
        encode_metadata([(key, "v")])


@pytest.mark.parametrize(
    "key",
    ["grpc-status", "grpc-message", "grpc-timeout", "grpc-encoding", "grpc-custom",
     "GRPC-Status", "content-type", "Content-Type", "te", "TE"],
)
def test_encode_rejects_reserved_keys(key):
    with pytest.raises(ValueError, match="reserved"):
        encode_metadata([(key, "v")])


def test_encode_allows_grpc_lookalikes():
    assert encode_metadata([("x-grpc-trace", "1"), ("tee", "2"), ("content-types", "3")]) == [
        ("x-grpc-trace", "1"), ("tee", "2"), ("content-types", "3")]


def test_encode_bin_bytes_unpadded_base64():
    out = encode_metadata([("trace-bin", b"\x00\x01\x02\x03")])
    assert out == [("trace-bin", "AAECAw")]
    assert "=" not in out[0][1]


@pytest.mark.parametrize("raw", [b"", b"a", b"ab", b"abc", b"abcd", bytes(range(256))])
def test_encode_bin_round_trip_all_lengths(raw):
    ((key, value),) = encode_metadata([("x-bin", raw)])
    assert "=" not in value
    assert base64.b64decode(value + "=" * (-len(value) % 4)) == raw
    assert decode_metadata([(key.encode(), value.encode())]) == [("x-bin", raw)]


def test_encode_bin_str_is_utf8():
    ((_, value),) = encode_metadata([("name-bin", "café")])
    assert value == base64.b64encode("café".encode()).decode().rstrip("=")


def test_encode_bin_bytearray():
    assert encode_metadata([("k-bin", bytearray(b"\xff"))]) == [("k-bin", "/w")]


def test_encode_bin_key_case_insensitive():
    assert encode_metadata([("Key-BIN", b"\x00")]) == [("key-bin", "AA")]


def test_encode_ascii_bytes_value():
    assert encode_metadata([("k", b"value")]) == [("k", "value")]


def test_encode_non_str_value_stringified():
    assert encode_metadata([("timeout", 3000)]) == [("timeout", "3000")]


def test_encode_printable_ascii_value_kept():
    value = "".join(chr(c) for c in range(0x20, 0x7F))
    assert encode_metadata([("k", value)]) == [("k", value)]


@pytest.mark.parametrize("value", ["line\nbreak", "tab\there", "\x00", "\x7f", "café", "日本",
                                   "cr\r"])
def test_encode_non_printable_value_suggests_bin(value):
    with pytest.raises(ValueError, match="-bin"):
        encode_metadata([("k", value)])


def test_encode_non_ascii_bytes_value_rejected():
    with pytest.raises(ValueError):
        encode_metadata([("k", b"\xff\xfe")])


# -- decode_metadata ---------------------------------------------------------------------


def test_decode_skips_pseudo_and_reserved_keeps_user_agent():
    headers = b([
        (":status", "200"), (":path", "/a/b"), ("content-type", "application/grpc"),
        ("te", "trailers"), ("grpc-timeout", "1S"), ("grpc-encoding", "gzip"),
        ("grpc-accept-encoding", "gzip"), ("grpc-status", "0"), ("grpc-message", "x"),
        ("grpc-message-type", "T"), ("user-agent", "grpc-go/1.33"), ("custom", "v"),
    ])
    assert decode_metadata(headers) == [("user-agent", "grpc-go/1.33"), ("custom", "v")]


def test_decode_values_are_str_and_keeps_duplicates_in_order():
    headers = b([("a", "1"), ("b", "2"), ("a", "3")])
    assert decode_metadata(headers) == [("a", "1"), ("b", "2"), ("a", "3")]


@pytest.mark.parametrize(
    "wire, raw",
    [
        (b"AAECAw", b"\x00\x01\x02\x03"),  # unpadded (grpc-go)
        (b"AAECAw==", b"\x00\x01\x02\x03"),  # padded (grpc-js)
        (b"/w", b"\xff"),
        (b"/w==", b"\xff"),
        (b"YWJj", b"abc"),
        (b"", b""),
    ],
)
def test_decode_bin_padded_and_unpadded(wire, raw):
    assert decode_metadata([(b"trace-bin", wire)]) == [("trace-bin", raw)]


def test_decode_bin_comma_joined():
    assert decode_metadata([(b"x-bin", b"AAE,AgM=")]) == [("x-bin", b"\x00\x01\x02\x03")]
    assert decode_metadata([(b"x-bin", b"AAE=, AgM")]) == [("x-bin", b"\x00\x01\x02\x03")]


def test_decode_bin_values_are_bytes():
    ((_, value),) = decode_metadata([(b"k-bin", b"YQ")])
    assert value == b"a"
    assert isinstance(value, bytes)


def test_decode_non_utf8_value_never_raises():
    ((_, value),) = decode_metadata([(b"k", b"\xff ok")])
    assert value == "\ufffd ok"


def test_decode_keeps_grpc_status_details_bin():
    # It's how rich error details travel; users read it from trailing metadata.
    ((key, value),) = decode_metadata([(b"grpc-status-details-bin", b"CAUSA2JhZA")])
    assert key == "grpc-status-details-bin"
    assert value == b"\x08\x05\x12\x03bad"  # google.rpc.Status{code: 5, message: "bad"}


def test_encode_decode_round_trip():
    md = [("x-id", "42"), ("blob-bin", b"\x00\xff\x10"), ("name", "Bob")]
    wire = [(k.encode(), v.encode()) for k, v in encode_metadata(md)]
    assert decode_metadata(wire) == md


# -- request_headers ---------------------------------------------------------------------


def test_request_headers_order_with_timeout():
    md = encode_metadata([("x-user", "u1")])
    headers = request_headers("/pkg.Svc/Method", "localhost:50051", timeout=1.5, metadata=md)
    names = keys(headers)
    assert names[:4] == [":method", ":scheme", ":path", ":authority"]
    assert names[4] == "grpc-timeout"
    assert names[-1] == "x-user"
    d = dict(headers)
    assert d[":method"] == "POST"
    assert d[":scheme"] == "http"
    assert d[":path"] == "/pkg.Svc/Method"
    assert d[":authority"] == "localhost:50051"
    assert d["te"] == "trailers"
    assert d["content-type"] == "application/grpc+proto"
    assert d["user-agent"] == USER_AGENT
    assert parse_timeout(d["grpc-timeout"]) == pytest.approx(1.5)


def test_request_headers_pseudo_headers_first():
    headers = request_headers("/a.B/C", "h:1", metadata=[("z", "1")],
                              extra=[("tri-service-version", "1.0")], accept_encoding="gzip")
    names = keys(headers)
    n_pseudo = sum(1 for k in names if k.startswith(":"))
    assert n_pseudo == 4
    assert all(k.startswith(":") for k in names[:n_pseudo])


def test_request_headers_without_timeout():
    headers = request_headers("/a.B/C", "h:1")
    assert "grpc-timeout" not in keys(headers)
    assert keys(headers)[4] == "content-type"


def test_request_headers_options():
    headers = request_headers(
        "/a.B/C", "h:443", scheme="https", content_type="application/grpc",
        accept_encoding="identity,deflate,gzip", extra=[("tri-service-group", "g")],
        metadata=[("k", "v")],
    )
    d = dict(headers)
    assert d[":scheme"] == "https"
    assert d["content-type"] == "application/grpc"
    assert d["grpc-accept-encoding"] == "identity,deflate,gzip"
    assert d["tri-service-group"] == "g"
    assert keys(headers)[-1] == "k"


def test_request_headers_no_accept_encoding_by_default():
    assert "grpc-accept-encoding" not in keys(request_headers("/a.B/C", "h:1"))


def test_request_headers_timeout_has_at_most_8_digits():
    headers = dict(request_headers("/a.B/C", "h:1", timeout=1e7))
    value = headers["grpc-timeout"]
    assert len(value) <= 9 and value[:-1].isdigit()


def test_request_headers_are_str_pairs():
    for k, v in request_headers("/a.B/C", "h:1", timeout=2):
        assert isinstance(k, str) and isinstance(v, str)


# -- parse_request_headers ---------------------------------------------------------------


def valid_request(**overrides):
    headers = {
        ":method": "POST",
        ":scheme": "http",
        ":path": "/helloworld.Greeter/SayHello",
        ":authority": "localhost:50051",
        "content-type": "application/grpc",
        "te": "trailers",
    }
    headers.update(overrides)
    return b([(k, v) for k, v in headers.items() if v is not None])


def test_parse_valid_request():
    headers = valid_request(**{"grpc-timeout": "100m", "x-user": "bob", "user-agent": "grpc-go"})
    head = parse_request_headers(headers)
    assert isinstance(head, RequestHead)
    assert head.service == "helloworld.Greeter"
    assert head.method == "SayHello"
    assert head.path == "/helloworld.Greeter/SayHello"
    assert head.timeout == pytest.approx(0.1)
    assert head.content_type == "application/grpc"
    assert head.encoding is None
    assert head.accept_encoding is None
    assert head.metadata == [("x-user", "bob"), ("user-agent", "grpc-go")]


def test_parse_no_timeout_is_none():
    assert parse_request_headers(valid_request()).timeout is None


def test_parse_encodings():
    head = parse_request_headers(valid_request(**{"grpc-encoding": "gzip",
                                                  "grpc-accept-encoding": "identity,gzip"}))
    assert head.encoding == "gzip"
    assert head.accept_encoding == "identity,gzip"


def test_parse_bin_metadata():
    head = parse_request_headers(valid_request(**{"trace-bin": "AAECAw=="}))
    assert ("trace-bin", b"\x00\x01\x02\x03") in head.metadata


def test_parse_grpc_js_header_order():
    # grpc-js: metadata, grpc-accept-encoding, grpc-timeout, user-agent before content-type/te
    headers = b([
        (":scheme", "http"), (":method", "POST"), (":authority", "127.0.0.1:5"),
        (":path", "/pkg.Svc/Do"),
        ("x-meta", "1"), ("grpc-accept-encoding", "identity,deflate,gzip"),
        ("grpc-timeout", "2S"), ("user-agent", "grpc-node-js/1.14"),
        ("content-type", "application/grpc"), ("te", "trailers"),
    ])
    head = parse_request_headers(headers)
    assert (head.service, head.method) == ("pkg.Svc", "Do")
    assert head.timeout == 2.0
    assert head.accept_encoding == "identity,deflate,gzip"
    assert head.metadata == [("x-meta", "1"), ("user-agent", "grpc-node-js/1.14")]


@pytest.mark.parametrize("method", ["GET", "PUT", "OPTIONS", None])
def test_parse_non_post_is_405(method):
    with pytest.raises(RequestRejected) as info:
        parse_request_headers(valid_request(**{":method": method}))
    assert info.value.http_status == 405
    assert isinstance(info.value, RpcError)
    assert info.value.code is StatusCode.INTERNAL


@pytest.mark.parametrize("ctype", ["application/json", "text/plain", "", "application/grp", None,
                                   "text/html", "grpc"])
def test_parse_bad_content_type_is_415(ctype):
    with pytest.raises(RequestRejected) as info:
        parse_request_headers(valid_request(**{"content-type": ctype}))
    assert info.value.http_status == 415


@pytest.mark.parametrize(
    "ctype, drops",
    [
        ("application/grpc", False),
        ("application/grpc+proto", False),
        ("application/grpc+json", False),
        ("application/grpc+data", True),  # apache-dubbo 3.0.0b1 (§9)
    ],
)
def test_parse_grpc_content_types(ctype, drops):
    head = parse_request_headers(valid_request(**{"content-type": ctype}))
    assert head.content_type == ctype
    assert head.drops_empty_messages is drops


@pytest.mark.parametrize("path", ["", "/", "noslash/Method", "/OnlyService", "/svc/", "//Method",
                                  "svc"])
def test_parse_malformed_path_is_unimplemented(path):
    with pytest.raises(RequestRejected) as info:
        parse_request_headers(valid_request(**{":path": path}))
    assert info.value.code is StatusCode.UNIMPLEMENTED
    assert info.value.http_status == 200


def test_parse_missing_path_is_unimplemented():
    with pytest.raises(RequestRejected) as info:
        parse_request_headers(valid_request(**{":path": None}))
    assert info.value.code is StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("timeout", ["", "10", "123456789m", "-1S", "1.5S", "10s", "１S",
                                     "\xff1S"])
def test_parse_malformed_timeout_is_internal(timeout):
    headers = valid_request(**{"grpc-timeout": None}) + [
        (b"grpc-timeout", timeout.encode("utf-8"))]
    with pytest.raises(RequestRejected) as info:
        parse_request_headers(headers)
    assert info.value.code is StatusCode.INTERNAL
    assert info.value.http_status == 200


@pytest.mark.parametrize("value, seconds", [("89188059n", 0.089188059), ("9999927u", 9.999927),
                                            ("86400000m", 86400.0), ("3000m", 3.0), ("1H", 3600.0)])
def test_parse_peer_timeouts(value, seconds):
    head = parse_request_headers(valid_request(**{"grpc-timeout": value}))
    assert head.timeout == pytest.approx(seconds)


def test_parse_checks_method_before_content_type():
    with pytest.raises(RequestRejected) as info:
        parse_request_headers(valid_request(**{":method": "GET", "content-type": "text/html"}))
    assert info.value.http_status == 405


def test_parse_java_attachment_headers_are_metadata():
    head = parse_request_headers(valid_request(**{
        "tri-service-version": "1.0.0", "tri-consumer-appname": "app", "timeout": "3000"}))
    assert ("tri-service-version", "1.0.0") in head.metadata
    assert ("timeout", "3000") in head.metadata


# -- response_headers / trailers ---------------------------------------------------------


def test_response_headers_default():
    assert response_headers() == [(":status", "200"), ("content-type", "application/grpc")]


def test_response_headers_with_options():
    headers = response_headers(content_type="application/grpc+data", metadata=[("k", "v")],
                               accept_encoding="identity,gzip", encoding="gzip")
    assert headers[0] == (":status", "200")
    d = dict(headers)
    assert d["content-type"] == "application/grpc+data"
    assert d["grpc-encoding"] == "gzip"
    assert d["grpc-accept-encoding"] == "identity,gzip"
    assert headers[-1] == ("k", "v")


def test_trailers_ok():
    assert trailers(StatusCode.OK) == [("grpc-status", "0")]


def test_trailers_with_details_and_metadata():
    headers = trailers(StatusCode.NOT_FOUND, "no user é 100%", [("x-k", "v")])
    assert headers == [
        ("grpc-status", "5"),
        ("grpc-message", "no user %C3%A9 100%25"),
        ("x-k", "v"),
    ]
    assert ":status" not in keys(headers)


def test_trailers_empty_details_omit_message():
    assert "grpc-message" not in keys(trailers(StatusCode.INTERNAL, ""))


def test_trailers_only_has_status_and_content_type():
    headers = trailers(StatusCode.UNIMPLEMENTED, "Method not found: x", trailers_only=True)
    d = dict(headers)
    assert headers[0] == (":status", "200")
    assert d["content-type"] == "application/grpc"
    assert d["grpc-status"] == "12"
    assert d["grpc-message"] == "Method not found: x"


def test_trailers_only_custom_http_status_and_content_type():
    headers = trailers(StatusCode.INTERNAL, "bad", trailers_only=True, http_status=415,
                       content_type="application/grpc+data")
    d = dict(headers)
    assert headers[0] == (":status", "415")
    assert d["content-type"] == "application/grpc+data"
    assert d["grpc-status"] == "13"


def test_trailers_round_trip_through_status_from_headers():
    text = "failed: 日本 +/: 50%\n"
    wire = [(k.encode(), v.encode()) for k, v in trailers(StatusCode.ABORTED, text,
                                                           [("x-bin", "AAE")])]
    st = status_from_headers(wire)
    assert st.code is StatusCode.ABORTED
    assert st.details == text
    assert st.metadata == [("x-bin", b"\x00\x01")]


def test_trailers_only_round_trip_through_check_response_headers():
    wire = b(trailers(StatusCode.UNIMPLEMENTED, "nope", trailers_only=True))
    st = check_response_headers(wire)
    assert st is not None
    assert (st.code, st.details) == (StatusCode.UNIMPLEMENTED, "nope")


# -- check_response_headers --------------------------------------------------------------


@pytest.mark.parametrize("ctype", ["application/grpc", "application/grpc+proto",
                                   "application/grpc+data"])
def test_check_normal_headers_is_none(ctype):
    assert check_response_headers(b([(":status", "200"), ("content-type", ctype),
                                     ("x-meta", "1")])) is None


def test_check_trailers_only_returns_status():
    st = check_response_headers(b([
        (":status", "200"), ("content-type", "application/grpc"),
        ("grpc-status", "5"), ("grpc-message", "user%20not%20found"), ("x-k", "v"),
    ]))
    assert isinstance(st, ResponseStatus)
    assert st.code is StatusCode.NOT_FOUND
    assert st.details == "user not found"
    assert st.metadata == [("x-k", "v")]


def test_check_trailers_only_ok():
    st = check_response_headers(b([(":status", "200"), ("content-type", "application/grpc"),
                                   ("grpc-status", "0")]))
    assert st is not None and st.code is StatusCode.OK


def test_check_java_404_with_grpc_status_uses_grpc_status():
    # Java 3.3 route miss: :status 404 but a valid grpc-status (§4).
    st = check_response_headers(b([
        (":status", "404"), ("content-type", "application/grpc"),
        ("grpc-status", "12"), ("grpc-message", "Not found"),
    ]))
    assert st is not None
    assert st.code is StatusCode.UNIMPLEMENTED
    assert st.details == "Not found"


def test_check_java_500_with_raw_utf8_message():
    st = check_response_headers([
        (b":status", b"500"), (b"content-type", b"application/grpc"),
        (b"grpc-status", b"2"), (b"grpc-message", "处理失败".encode() + b" \xff"),
    ])
    assert st is not None
    assert st.code is StatusCode.UNKNOWN
    assert st.details == "处理失败 \ufffd"


def test_check_grpc_status_before_status_pseudo_header_irrelevant():
    st = check_response_headers([(b"grpc-status", b"14"), (b":status", b"503")])
    assert st is not None and st.code is StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "http, code",
    [("503", StatusCode.UNAVAILABLE), ("404", StatusCode.UNIMPLEMENTED),
     ("401", StatusCode.UNAUTHENTICATED), ("403", StatusCode.PERMISSION_DENIED),
     ("400", StatusCode.INTERNAL), ("500", StatusCode.UNKNOWN), ("502", StatusCode.UNAVAILABLE)],
)
def test_check_non_200_without_grpc_status_maps_http(http, code):
    st = check_response_headers(b([(":status", http), ("content-type", "text/html")]))
    assert st is not None
    assert st.code is code
    assert http in st.details


def test_check_503_without_content_type():
    st = check_response_headers(b([(":status", "503")]))
    assert st is not None and st.code is StatusCode.UNAVAILABLE


@pytest.mark.parametrize("ctype", ["text/html", "application/json", ""])
def test_check_200_with_wrong_content_type_is_unknown(ctype):
    st = check_response_headers(b([(":status", "200"), ("content-type", ctype)]))
    assert st is not None
    assert st.code is StatusCode.UNKNOWN


def test_check_200_without_content_type_is_unknown():
    st = check_response_headers(b([(":status", "200")]))
    assert st is not None and st.code is StatusCode.UNKNOWN


# -- status_from_headers -----------------------------------------------------------------


def test_status_message_before_status():
    st = status_from_headers(b([("grpc-message", "boom%21"), ("grpc-status", "13")]))
    assert st.code is StatusCode.INTERNAL
    assert st.details == "boom!"


def test_status_missing_grpc_status_is_unknown():
    st = status_from_headers(b([("x-k", "v")]))
    assert st.code is StatusCode.UNKNOWN
    assert st.details  # explains what went wrong
    assert st.metadata == [("x-k", "v")]


def test_status_missing_grpc_status_keeps_message():
    st = status_from_headers(b([("grpc-message", "partial")]))
    assert st.code is StatusCode.UNKNOWN
    assert st.details == "partial"


def test_status_garbage_grpc_status_is_unknown():
    st = status_from_headers(b([("grpc-status", "banana")]))
    assert st.code is StatusCode.UNKNOWN


def test_status_no_message_is_empty_details():
    st = status_from_headers(b([("grpc-status", "0")]))
    assert st.code is StatusCode.OK
    assert st.details == ""
    assert st.metadata == []


def test_status_metadata_excludes_protocol_headers():
    st = status_from_headers(b([("grpc-status", "3"), ("grpc-message", "bad"),
                                ("x-a", "1"), ("x-b-bin", "AQ")]))
    assert st.code is StatusCode.INVALID_ARGUMENT
    assert st.metadata == [("x-a", "1"), ("x-b-bin", b"\x01")]


def test_status_non_utf8_message_never_raises():
    st = status_from_headers([(b"grpc-status", b"2"), (b"grpc-message", b"\xff\xfe%zz")])
    assert st.code is StatusCode.UNKNOWN
    assert isinstance(st.details, str)
    assert "%zz" in st.details


def test_grpc_web_content_type_is_not_grpc():
    # application/grpc-web is a different protocol; only grpc, grpc+x and grpc;params pass.
    headers = [(b":method", b"POST"), (b":path", b"/s.S/m"),
               (b"content-type", b"application/grpc-web")]
    with pytest.raises(RequestRejected) as info:
        parse_request_headers(headers)
    assert info.value.http_status == 415
    ok = [(b":method", b"POST"), (b":path", b"/s.S/m"),
          (b"content-type", b"application/grpc; charset=utf-8")]
    assert parse_request_headers(ok).method == "m"


def test_non_numeric_http_status_is_unknown_not_a_crash():
    status = check_response_headers([(b":status", b"abc"), (b"content-type", b"text/plain")])
    assert status is not None and status.code is StatusCode.UNKNOWN
