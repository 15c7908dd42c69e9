"""``grpc-timeout`` encoding and the monotonic ``Deadline`` every blocking wait uses."""

from __future__ import annotations

import math
import time

__all__ = ["encode_timeout", "parse_timeout", "Deadline"]

_MAX_DIGITS = 99_999_999  # the spec allows at most 8 digits
# Finest unit first: the first one whose value fits in 8 digits keeps the most precision.
_UNITS = (("n", 1e9), ("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600))
# (multiplier, divisor): dividing by an exact power of ten keeps 100000u == 0.1 exactly.
_PARSE_UNITS = {"n": (1, 10**9), "u": (1, 10**6), "m": (1, 10**3), "S": (1, 1), "M": (60, 1),
                "H": (3600, 1)}


def encode_timeout(seconds: float) -> str:
    """Encode a timeout in the finest unit whose value has at most 8 digits.

    Values are rounded up, so a positive timeout never goes out as 0; anything over
    the largest encodable value (about 11,400 years) is clamped to it.
    """
    if not seconds > 0:  # also NaN
        return "0n"
    if seconds >= _MAX_DIGITS * 3600:
        return f"{_MAX_DIGITS}H"
    for unit, per_second in _UNITS:
        value = math.ceil(seconds * per_second)
        if value <= _MAX_DIGITS:
            return f"{value}{unit}"
    return f"{_MAX_DIGITS}H"


def parse_timeout(value: str | bytes) -> float:
    """Parse a ``grpc-timeout`` value into seconds; ``ValueError`` if malformed."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    digits, unit = value[:-1], value[-1:]
    if not (1 <= len(digits) <= 8 and digits.isdigit() and digits.isascii()) \
            or unit not in _PARSE_UNITS:
        raise ValueError(f"malformed grpc-timeout {value!r}")
    multiplier, divisor = _PARSE_UNITS[unit]
    return int(digits) * multiplier / divisor


class Deadline:
    """A point on the monotonic clock; ``None`` is used for "no deadline"."""

    __slots__ = ("expires_at",)

    def __init__(self, expires_at: float) -> None:
        self.expires_at = expires_at

    @classmethod
    def after(cls, seconds: float | None) -> Deadline | None:
        return None if seconds is None else cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.expires_at

    def timeout(self) -> str:
        """The ``grpc-timeout`` header value for the time that is left."""
        return encode_timeout(self.remaining())

    def __repr__(self) -> str:
        return f"<Deadline in {self.remaining():.3f}s>"
