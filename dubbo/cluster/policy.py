"""Cluster strategies (sans-I/O): when a failed call is tried again on another provider.

As in Dubbo: ``failover`` (default) tries another provider when a call could not reach
one (UNAVAILABLE), and after any failure of a method marked idempotent, up to
``retries`` more times; ``failfast`` never retries; ``failsafe`` never retries and
swallows the error (the call returns ``None``); ``forking`` sends a unary call to
``forks`` providers at once and takes the first success. A stream is retried only if it
failed before a byte of it went out (it could not connect or got no stream).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..status import StatusCode

__all__ = ["ClusterPolicy", "CLUSTERS", "DEFAULT_RETRIES", "DEFAULT_FORKS"]

CLUSTERS = ("failover", "failfast", "failsafe", "forking")
DEFAULT_RETRIES = 2  # Dubbo's: three tries in all
DEFAULT_FORKS = 2
# Codes that say the provider did not (or may not have) run the call.
_NOT_SERVED = {StatusCode.UNAVAILABLE}
# Codes no other provider can change: the caller's own cancel and deadline.
_FINAL = {StatusCode.OK, StatusCode.CANCELLED, StatusCode.DEADLINE_EXCEEDED}


@dataclass(frozen=True)
class ClusterPolicy:
    name: str = "failover"
    retries: int = DEFAULT_RETRIES
    forks: int = DEFAULT_FORKS

    def __post_init__(self) -> None:
        if self.name not in CLUSTERS:
            raise ValueError(f"unknown cluster {self.name!r}; choose from {', '.join(CLUSTERS)}")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.forks < 1:
            raise ValueError("forks must be >= 1")

    @classmethod
    def of(cls, name: str | None, retries: int | None, forks: int | None = None) -> ClusterPolicy:
        return cls((name or "failover").lower(),
                   DEFAULT_RETRIES if retries is None else retries,
                   DEFAULT_FORKS if forks is None else forks)

    @property
    def attempts(self) -> int:
        """Tries in all for one call."""
        return 1 + self.retries if self.name == "failover" else 1

    def retry(self, code: StatusCode, attempt: int, *, idempotent: bool,
              sent: bool, whole_request: bool) -> bool:
        """Whether try number ``attempt`` (1-based), failed with ``code``, goes again.

        ``sent``: bytes of the call went out; ``whole_request``: the caller still has
        the whole request (unary, server stream) and can send it again."""
        if self.name != "failover" or attempt >= self.attempts:
            return False
        if sent and not whole_request:
            return False  # a stream half sent cannot be sent again
        return code in _NOT_SERVED or (idempotent and code not in _FINAL)
