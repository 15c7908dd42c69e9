"""``grpc-timeout`` encoding and the monotonic ``Deadline`` every blocking wait uses."""

from __future__ import annotations

import math
import threading
import time

__all__ = ["MAX_TIMEOUT", "encode_timeout", "parse_timeout", "Deadline"]

# The furthest a Deadline reaches: about 3.2 years, i.e. "no deadline" in practice.
# The wire allows 99999999H (~11,400 years) and users pass 1e12 or inf, but a
# ``threading`` wait raises OverflowError past threading.TIMEOUT_MAX (~9.2e9 s on Linux,
# ~4.3e6 s on Windows, where the cap is therefore ~49 days). Deadline.remaining() never
# exceeds this, so it can go straight to Condition.wait, Event.wait, queue.get(timeout=)
# and socket.settimeout. select.poll/epoll take at most INT_MAX ms (~24.8 days): clamp
# further before those.
MAX_TIMEOUT: float = min(1e8, threading.TIMEOUT_MAX)

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
        """A deadline ``seconds`` from now; ``None`` for none.

        Peers and users choose ``seconds``, so any number is accepted: more than
        ``MAX_TIMEOUT`` (1e12, inf, ``99999999H``) is clamped to it, and zero, negative
        or NaN give a deadline that has already expired.
        """
        if seconds is None:
            return None
        now = time.monotonic()
        if not seconds > 0:  # also NaN, which would otherwise never expire
            return cls(now)
        return cls(now + min(seconds, MAX_TIMEOUT))

    def remaining(self) -> float:
        """Seconds left: never negative, never over ``MAX_TIMEOUT``, never NaN, so
        always a valid timeout for the stdlib's threading waits."""
        left = self.expires_at - time.monotonic()
        if left > 0:
            return min(left, MAX_TIMEOUT)
        return 0.0  # also for a NaN expires_at

    def expired(self) -> bool:
        return not time.monotonic() < self.expires_at  # a NaN expires_at has expired

    def timeout(self) -> str:
        """The ``grpc-timeout`` header value for the time that is left."""
        return encode_timeout(self.remaining())

    def __repr__(self) -> str:
        return f"<Deadline in {self.remaining():.3f}s>"
