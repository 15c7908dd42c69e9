"""Per-connection bounds on what a peer may make us do (sans-I/O).

A peer can cost us CPU and memory without ever opening a real call: resetting streams
as fast as it opens them (CVE-2023-44487, "rapid reset"), flooding PING or SETTINGS
frames, or sending frames that carry nothing. Each such pattern is counted per
connection in a token bucket and answered with GOAWAY ENHANCE_YOUR_CALM once the peer
exceeds it, as nghttp2 and grpc-go do. The defaults leave ordinary clients (grpcio's
BDP pings, keepalive, cancelling many calls) far below the limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Rate", "FloodLimits", "FloodGuard", "TokenBucket"]


@dataclass(frozen=True)
class Rate:
    """``burst`` events at once, refilled at ``per_second``."""

    burst: int
    per_second: float


@dataclass(frozen=True)
class FloodLimits:
    """What one connection may send before it is told to calm down and closed."""

    # nghttp2's stream-reset limit (burst 1000, 33 per second).
    resets: Rate = field(default_factory=lambda: Rate(1000, 33.0))
    pings: Rate = field(default_factory=lambda: Rate(1000, 100.0))
    settings: Rate = field(default_factory=lambda: Rate(100, 10.0))
    # DATA frames with no payload and no END_STREAM, PRIORITY frames.
    empty_frames: Rate = field(default_factory=lambda: Rate(1000, 100.0))


class TokenBucket:
    __slots__ = ("burst", "per_second", "tokens", "stamp")

    def __init__(self, rate: Rate, now: float) -> None:
        self.burst = float(rate.burst)
        self.per_second = rate.per_second
        self.tokens = self.burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token; False when none is left."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class FloodGuard:
    """One connection's counters. Used by its reader only: no lock."""

    __slots__ = ("_buckets",)

    def __init__(self, limits: FloodLimits, now: float) -> None:
        self._buckets = {name: TokenBucket(getattr(limits, name), now)
                         for name in ("resets", "pings", "settings", "empty_frames")}

    def allow(self, kind: str, now: float) -> bool:
        """Count one event of ``kind``; False once the peer is over its limit."""
        return self._buckets[kind].take(now)
