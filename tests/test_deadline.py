"""``grpc-timeout`` encoding/parsing (PROTOCOL.md §2, §10, §12) and ``Deadline``."""

from __future__ import annotations

import queue
import re
import threading
import time
from fractions import Fraction

import pytest

from dubbo.wire.deadline import MAX_TIMEOUT, Deadline, encode_timeout, parse_timeout

_WIRE = re.compile(r"^([0-9]{1,8})([numSMH])$")
_UNIT_SECONDS = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "S": Fraction(1),
    "M": Fraction(60),
    "H": Fraction(3600),
}


def exact_seconds(encoded: str) -> Fraction:
    """The exact duration an encoded value denotes (no float rounding)."""
    m = _WIRE.match(encoded)
    assert m, f"not a valid grpc-timeout: {encoded!r}"
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


SAMPLES = [
    1e-12, 1e-9, 1.5e-9, 3e-7, 1e-6, 0.001, 0.0123456789, 0.09, 0.1, 0.5, 0.999999999,
    1.0, 1.25, 3.0, 10.0, 59.9, 100.0, 1234.5678, 3600.0, 86400.0, 86400.0 * 365,
    99_999_999.0, 1e9, 1e10, 99_999_999 * 3600.0,
]


# -- encode_timeout ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (0.5, "500000u"),  # 500000000n has 9 digits
        (0.09, "90000000n"),
        (10.0, "10000000u"),
        (86400.0, "86400000m"),  # one day, as grpc-go writes it
        (100_000.0, "100000S"),  # 100000000m has 9 digits
        (1.0, "1000000u"),
        (0.099999999, "99999999n"),
        (99_999_999.0, "99999999S"),
        (100_000_000.0, "1666667M"),
        (99_999_999 * 60.0, "99999999M"),
        (99_999_999 * 60.0 + 1, "1666667H"),
    ],
)
def test_encode_picks_finest_unit_that_fits(seconds, expected):
    assert encode_timeout(seconds) == expected


@pytest.mark.parametrize("seconds", [1e-15, 1e-12, 1e-10, 1e-9, 5e-10])
def test_tiny_positive_never_zero(seconds):
    encoded = encode_timeout(seconds)
    assert encoded == "1n"
    assert parse_timeout(encoded) > 0


@pytest.mark.parametrize("seconds", SAMPLES)
def test_positive_never_encodes_as_zero(seconds):
    m = _WIRE.match(encode_timeout(seconds))
    assert m and int(m.group(1)) > 0


@pytest.mark.parametrize("seconds", [0.0, -0.0, -1.0, -1e9, float("-inf")])
def test_zero_and_negative_encode_as_zero(seconds):
    encoded = encode_timeout(seconds)
    assert _WIRE.match(encoded)
    assert parse_timeout(encoded) == 0


def test_nan_does_not_raise_and_is_valid():
    assert _WIRE.match(encode_timeout(float("nan")))


@pytest.mark.parametrize("seconds", SAMPLES + [0.0])
def test_every_encoded_value_is_valid_wire_form(seconds):
    # <= 8 ASCII digits and one unit: grpc-js reads 10000000000n as 0, grpc-go resets.
    encoded = encode_timeout(seconds)
    assert _WIRE.match(encoded), encoded
    assert len(encoded) <= 9


@pytest.mark.parametrize("seconds", [99_999_999 * 3600.0 + 1, 1e12, 1e15, 1e18])
def test_huge_values_clamp(seconds):
    assert encode_timeout(seconds) == "99999999H"


@pytest.mark.parametrize("seconds", [1e300, float("inf")])
def test_extreme_values_clamp_instead_of_raising(seconds):
    # The docstring promises clamping for "anything over the largest encodable value".
    assert encode_timeout(seconds) == "99999999H"


@pytest.mark.parametrize("seconds", SAMPLES)
def test_encoding_never_shortens_the_timeout(seconds):
    # Exact arithmetic: the encoded duration is >= the requested one (rounded up)...
    # The request is the decimal the user wrote (repr), not the float's binary expansion.
    exact = exact_seconds(encode_timeout(seconds))
    if seconds <= 99_999_999 * 3600:
        assert exact >= Fraction(repr(seconds))


@pytest.mark.parametrize("seconds", [s for s in SAMPLES if s <= 99_999_999 * 3600])
def test_encoding_is_close(seconds):
    # ...and by less than one of the unit it picked. A finer unit overflowed, so the
    # value has at least 6 digits (1e8 / 1000): under 1e-5 relative, or 1 ns when tiny.
    encoded = encode_timeout(seconds)
    exact = exact_seconds(encoded)
    err = exact - Fraction(repr(seconds))
    assert err < _UNIT_SECONDS[encoded[-1]]
    assert err <= max(Fraction(repr(seconds)) / 10**5, Fraction(1, 10**9))


@pytest.mark.parametrize("seconds", SAMPLES)
def test_round_trip_parse(seconds):
    parsed = parse_timeout(encode_timeout(seconds))
    if seconds <= 99_999_999 * 3600:
        # Allow one float ulp of slack for the parse multiplication (see report).
        assert parsed >= seconds * (1 - 1e-15)
        assert parsed <= seconds * (1 + 1e-5) + 1e-9
    else:
        assert parsed == 99_999_999 * 3600


# -- parse_timeout -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("1n", 1e-9),
        ("1u", 1e-6),
        ("1m", 1e-3),
        ("1S", 1.0),
        ("1M", 60.0),
        ("1H", 3600.0),
        ("0S", 0.0),
        ("250m", 0.25),
        ("3000m", 3.0),  # Java's default unary timeout
        ("2M", 120.0),
        ("24H", 86400.0),
        ("99999999H", 99_999_999 * 3600.0),
        ("00000001S", 1.0),
        # grpc-go's forms (PROTOCOL.md §12)
        ("89188059n", 0.089188059),
        ("9999927u", 9.999927),
        ("86400000m", 86400.0),
    ],
)
def test_parse_units(value, seconds):
    assert parse_timeout(value) == pytest.approx(seconds, rel=1e-12, abs=0)


def test_parse_accepts_bytes():
    assert parse_timeout(b"100m") == pytest.approx(0.1)
    assert parse_timeout(b"86400000m") == pytest.approx(86400.0)


def test_parse_returns_float_seconds():
    assert isinstance(parse_timeout("5S"), float)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "S",
        "10",
        "10s",  # units are case-sensitive: 's' is not a unit
        "10h",
        "10x",
        "10 S",
        " 10S",
        "10S ",
        "123456789S",  # 9 digits
        "100000000n",
        "-1S",
        "+1S",
        "1.5S",
        "1e3m",
        "0x10S",
        "abcS",
        "１S",  # fullwidth digit one: str.isdigit() is True for it
        "1１S",
        "²S",
        "٣m",  # Arabic-Indic digit three
        "10SS",
        "10mS",
    ],
)
def test_parse_rejects_malformed(value):
    with pytest.raises(ValueError):
        parse_timeout(value)


@pytest.mark.parametrize(
    "value", [b"", b"10", b"123456789S", b"\xef\xbc\x91S", b"\xff1S", b"1\xff"]
)
def test_parse_rejects_malformed_bytes(value):
    with pytest.raises(ValueError):
        parse_timeout(value)


# -- Deadline ----------------------------------------------------------------------------


def test_after_none_is_none():
    assert Deadline.after(None) is None


def test_after_positive_is_not_expired():
    d = Deadline.after(60.0)
    assert d is not None
    assert not d.expired()
    assert 59.0 < d.remaining() <= 60.0


def test_remaining_decreases():
    d = Deadline.after(60.0)
    first = d.remaining()
    time.sleep(0.002)
    assert d.remaining() < first


def test_past_deadline_remaining_is_zero_and_expired():
    d = Deadline.after(-5.0)
    assert d.expired()
    assert d.remaining() == 0.0


def test_zero_deadline_is_expired():
    d = Deadline.after(0.0)
    assert d.expired()
    assert d.remaining() == 0.0


def test_short_deadline_expires():
    d = Deadline.after(0.01)
    time.sleep(0.02)
    assert d.expired()
    assert d.remaining() == 0.0


def test_deadline_uses_monotonic_clock():
    before = time.monotonic()
    d = Deadline.after(10.0)
    after = time.monotonic()
    assert before + 10.0 <= d.expires_at <= after + 10.0


def test_timeout_header_reflects_remaining_time():
    d = Deadline.after(10.0)
    encoded = d.timeout()
    assert _WIRE.match(encoded)
    assert 9.0 < parse_timeout(encoded) <= 10.0 + 1e-6


def test_timeout_header_of_expired_deadline_is_zero():
    d = Deadline(time.monotonic() - 1.0)
    assert parse_timeout(d.timeout()) == 0.0


def test_repr_mentions_remaining():
    assert "Deadline" in repr(Deadline.after(1.0))


# -- Deadline: any timeout a peer or user gives is safe (issue 7) ------------------------

HUGE = [1e12, float("inf"), 1e300, 10**400, parse_timeout("99999999H"),
        parse_timeout("2000000H"), threading.TIMEOUT_MAX, threading.TIMEOUT_MAX * 2]
HUGE_IDS = ["1e12", "inf", "1e300", "10**400", "99999999H", "2000000H", "TIMEOUT_MAX",
            "2*TIMEOUT_MAX"]


@pytest.mark.parametrize("seconds", HUGE, ids=HUGE_IDS)
def test_huge_timeouts_are_clamped_to_max_timeout(seconds):
    d = Deadline.after(seconds)
    assert not d.expired()
    assert MAX_TIMEOUT - 1 < d.remaining() <= MAX_TIMEOUT
    assert d.expires_at <= time.monotonic() + MAX_TIMEOUT
    assert _WIRE.match(d.timeout())


def test_max_timeout_is_years_yet_fits_threading_waits():
    assert MAX_TIMEOUT <= threading.TIMEOUT_MAX
    if threading.TIMEOUT_MAX >= 1e8:  # not Windows (~49 days there)
        assert MAX_TIMEOUT >= 3 * 365 * 86400


@pytest.mark.parametrize("seconds", HUGE, ids=HUGE_IDS)
def test_remaining_of_a_huge_deadline_is_accepted_by_threading_waits(seconds):
    # Lock.acquire checks its timeout before taking a free lock: OverflowError past
    # threading.TIMEOUT_MAX ("timestamp out of range" on the server before the fix).
    d = Deadline.after(seconds)
    lock = threading.Lock()
    assert lock.acquire(timeout=d.remaining())
    lock.release()
    # queue.get really waits on a Condition with that timeout until the item arrives.
    q: queue.Queue[int] = queue.Queue()
    putter = threading.Timer(0.02, q.put, (1,))
    putter.start()
    try:
        assert q.get(timeout=d.remaining()) == 1
    finally:
        putter.join()
    event = threading.Event()
    event.set()
    assert event.wait(d.remaining())


@pytest.mark.parametrize("seconds", [float("nan"), float("-inf"), -1e300, -0.0, 0])
def test_nan_zero_and_negative_timeouts_are_already_expired(seconds):
    d = Deadline.after(seconds)
    assert d.expired()
    assert d.remaining() == 0.0
    assert parse_timeout(d.timeout()) == 0


@pytest.mark.parametrize("expires_at", [float("nan"), float("inf"), float("-inf"), 1e300])
def test_a_deadline_built_directly_still_gives_safe_waits(expires_at):
    d = Deadline(expires_at)
    remaining = d.remaining()
    assert 0.0 <= remaining <= MAX_TIMEOUT  # never NaN: NaN fails both comparisons
    assert d.expired() == (remaining == 0.0)
    assert _WIRE.match(d.timeout())
