"""Load balancers: which provider a call goes to (sans-I/O).

Each balancer picks one of a non-empty sequence of candidates (the caller's endpoints:
``key`` "host:port", ``weight``, ``active`` calls in flight). They follow Dubbo Java's
``RandomLoadBalance``, ``RoundRobinLoadBalance``, ``LeastActiveLoadBalance`` and
``ConsistentHashLoadBalance`` (dubbo-cluster, ``rpc/cluster/loadbalance``), so a Python
consumer spreads calls over a mixed fleet as a Java one does; ``p2c`` is the power of
two choices on in-flight calls (the selection step of Dubbo's ``AdaptiveLoadBalance``).

A weight of 0 means "send nothing here" as long as any candidate has a positive weight
(every balancer drops such candidates first); when all weights are 0 they count as equal.
The balancers hold no sockets and start no threads: round-robin's per-provider counters
and consistent-hash's rings are the only state, each behind one lock, so one instance
serves all of a client's threads. ``load_balance(name)`` makes a new one per client.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol, TypeVar

__all__ = [
    "Candidate",
    "LoadBalance",
    "RandomLoadBalance",
    "RoundRobinLoadBalance",
    "LeastActiveLoadBalance",
    "P2CLoadBalance",
    "ConsistentHashLoadBalance",
    "load_balance",
    "LOAD_BALANCES",
]


class Candidate(Protocol):
    """What a balancer picks from. Read-only properties, so plain attributes, properties
    and frozen dataclasses all fit; each is read once per ``select``."""

    @property
    def key(self) -> str:
        """The provider's "host:port": its identity, stable while it stays registered."""

    @property
    def weight(self) -> int:
        """>= 0, Dubbo's default 100; 0 = never picked unless every weight is 0."""

    @property
    def active(self) -> int:
        """Calls in flight on this provider now (the caller counts them)."""


C = TypeVar("C", bound=Candidate)


class LoadBalance(ABC):
    """Picks one provider per call. ``rng`` makes the random choices reproducible."""

    name: ClassVar[str]

    def __init__(self, *, rng: random.Random | None = None) -> None:
        # random.Random's methods are safe to share between threads (each draw is one
        # C call under the GIL, or under the object's own lock when free-threaded).
        self._rng = rng if rng is not None else random.Random()

    @abstractmethod
    def select(self, candidates: Sequence[C], key: bytes | None = None) -> C:
        """One of ``candidates`` (non-empty). ``key``: the request's serialized bytes
        when known; only consistent hashing uses it."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _eligible(candidates: Sequence[C]) -> Sequence[C]:
    """The candidates with a positive weight, or all of them when none has one."""
    if all(c.weight > 0 for c in candidates):
        return candidates
    positive = [c for c in candidates if c.weight > 0]
    # Empty also when a weight changed between the two reads: then take them all.
    return positive or candidates


def _weighted_choice(candidates: Sequence[C], rng: random.Random) -> C:
    """Dubbo's RandomLoadBalance: chance proportional to weight; uniform when all weights
    are equal or none is positive. A weight-0 candidate is never drawn while another's
    weight is positive: its cumulative bound equals its predecessor's."""
    count = len(candidates)
    if count == 1:
        return candidates[0]
    cumulative: list[int] = []
    total = 0
    same = True
    first = -1
    for candidate in candidates:
        weight = max(candidate.weight, 0)
        if first < 0:
            first = weight
        elif weight != first:
            same = False
        total += weight
        cumulative.append(total)
    if total > 0 and not same:
        return candidates[bisect.bisect_right(cumulative, rng.randrange(total))]
    return candidates[rng.randrange(count)]


class RandomLoadBalance(LoadBalance):
    """Weighted random; equal weights give a uniform choice. Dubbo's default."""

    name = "random"

    def select(self, candidates: Sequence[C], key: bytes | None = None) -> C:
        return _weighted_choice(candidates, self._rng)


class _Counter:
    """Round-robin state of one provider."""

    __slots__ = ("weight", "current", "seen")

    def __init__(self, weight: int, now: float) -> None:
        self.weight = weight
        self.current = 0
        self.seen = now


class RoundRobinLoadBalance(LoadBalance):
    """Smooth weighted round-robin (nginx's, as Dubbo's RoundRobinLoadBalance): each pick
    adds every provider's weight to its counter, takes the highest (first one on a tie)
    and subtracts the total from it. Weights 5/1/1 give a a b a c a a, not a a a a a b c.

    Counters live per provider key. A key missing from a call (a retry that leaves out
    the provider that failed) keeps its counter; one missing for ``recycle_period``
    seconds is forgotten, as Dubbo does after 60 s, so providers that come and go leave
    nothing behind. A provider whose weight changes restarts from 0.
    """

    name = "roundrobin"

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        recycle_period: float = 60.0,
    ) -> None:
        super().__init__(rng=rng)
        self._clock = clock
        self._recycle_period = recycle_period
        self._lock = threading.Lock()
        # _lock guards _counters (every provider's weight, counter and last-seen time).
        self._counters: dict[str, _Counter] = {}

    def select(self, candidates: Sequence[C], key: bytes | None = None) -> C:
        pool = _eligible(candidates)
        if len(pool) == 1:
            return pool[0]
        weights = [max(c.weight, 0) for c in pool]
        total = sum(weights)
        if total == 0:  # all weights 0: plain round-robin
            weights = [1] * len(pool)
            total = len(pool)
        now = self._clock()
        with self._lock:
            counters = self._counters
            best = -1
            best_counter: _Counter | None = None
            for index, (candidate, weight) in enumerate(zip(pool, weights, strict=True)):
                counter = counters.get(candidate.key)
                if counter is None:
                    counter = counters[candidate.key] = _Counter(weight, now)
                elif counter.weight != weight:
                    counter.weight = weight
                    counter.current = 0
                counter.seen = now
                if weight == 0:  # a weight dropped to 0 after _eligible read it
                    continue
                counter.current += weight
                if best_counter is None or counter.current > best_counter.current:
                    best = index
                    best_counter = counter
            if len(counters) != len(pool):
                cutoff = now - self._recycle_period
                for stale in [k for k, c in counters.items() if c.seen < cutoff]:
                    del counters[stale]
            if best_counter is None:  # every weight went to 0 while we read them
                return pool[0]
            best_counter.current -= total
        return pool[best]


class LeastActiveLoadBalance(LoadBalance):
    """Dubbo's LeastActiveLoadBalance: among the providers with the fewest calls in
    flight, a weighted random one. A slow provider piles up calls and gets fewer."""

    name = "leastactive"

    def select(self, candidates: Sequence[C], key: bytes | None = None) -> C:
        pool = _eligible(candidates)
        if len(pool) == 1:
            return pool[0]
        # One read of each counter: the caller changes them while we look.
        actives = [c.active for c in pool]
        least = min(actives)
        fewest = [c for c, active in zip(pool, actives, strict=True) if active == least]
        return _weighted_choice(fewest, self._rng)


class P2CLoadBalance(LoadBalance):
    """Power of two choices: two distinct random providers, the one with fewer calls in
    flight. Unlike least-active it never herds every caller onto the one idle provider,
    and the busiest provider is never picked. On a tie the choice is weighted random
    between the two, as in Dubbo's AdaptiveLoadBalance."""

    name = "p2c"

    def select(self, candidates: Sequence[C], key: bytes | None = None) -> C:
        pool = _eligible(candidates)
        count = len(pool)
        if count == 1:
            return pool[0]
        first = self._rng.randrange(count)
        second = self._rng.randrange(count - 1)
        if second >= first:  # distinct, each pair equally likely
            second += 1
        a, b = pool[first], pool[second]
        active_a, active_b = a.active, b.active
        if active_a != active_b:
            return a if active_a < active_b else b
        return _weighted_choice((a, b), self._rng)


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _point(digest: bytes, number: int) -> int:
    """Dubbo's ConsistentHashSelector.hash: bytes 4n..4n+3 of the digest, little-endian."""
    return int.from_bytes(digest[4 * number : 4 * number + 4], "little")


class _Ring:
    """Sorted ring points and, for each, the key of the provider owning it."""

    __slots__ = ("points", "owners")

    def __init__(self, keys: frozenset[str], replicas: int) -> None:
        owner: dict[int, str] = {}
        # Sorted, so the ring does not depend on the candidates' order; on the rare
        # collision of two points the later key wins, as with Dubbo's TreeMap.put.
        for key in sorted(keys):
            for i in range(replicas // 4):
                digest = _md5(f"{key}{i}".encode())
                for number in range(4):
                    owner[_point(digest, number)] = key
        self.points = sorted(owner)
        self.owners = [owner[p] for p in self.points]

    def lookup(self, point: int) -> str:
        """The owner of the first point at or after ``point``, wrapping around."""
        index = bisect.bisect_left(self.points, point)
        return self.owners[index if index < len(self.points) else 0]


class ConsistentHashLoadBalance(LoadBalance):
    """Dubbo's ConsistentHashLoadBalance: the same request bytes go to the same provider,
    and a provider leaving moves only the requests it had (about 1/N of them).

    Each provider has ``replicas`` (160) points on a 2**32 ring: for i < replicas/4,
    md5(f"{key}{i}") cut into four little-endian 32-bit numbers, the points Dubbo Java
    places for the same "host:port". A request goes to the first point at or after the
    first 32 bits of md5(request bytes). Rings are cached by the set of provider keys,
    the last ``cache_size`` of them, so a retry over the providers minus one does not
    rebuild the full ring. Weights do not matter beyond 0 (left out). Without request
    bytes the choice is weighted random.
    """

    name = "consistenthash"

    def __init__(
        self, *, rng: random.Random | None = None, replicas: int = 160, cache_size: int = 8
    ) -> None:
        super().__init__(rng=rng)
        if replicas < 4:
            raise ValueError(f"replicas must be at least 4, got {replicas}")
        self._replicas = replicas
        self._cache_size = max(cache_size, 1)
        self._lock = threading.Lock()
        # _lock guards _rings (built rings by provider key set, least recently used first).
        self._rings: OrderedDict[frozenset[str], _Ring] = OrderedDict()

    def _ring(self, keys: frozenset[str]) -> _Ring:
        with self._lock:
            ring = self._rings.get(keys)
            if ring is not None:
                self._rings.move_to_end(keys)
                return ring
        # Built outside the lock (160 md5s per provider): two threads may both build
        # the same ring after a change, which costs time but never a wrong answer.
        ring = _Ring(keys, self._replicas)
        with self._lock:
            self._rings[keys] = ring
            self._rings.move_to_end(keys)
            while len(self._rings) > self._cache_size:
                self._rings.popitem(last=False)
        return ring

    def select(self, candidates: Sequence[C], key: bytes | None = None) -> C:
        pool = _eligible(candidates)
        if key is None:
            return _weighted_choice(pool, self._rng)
        if len(pool) == 1:
            return pool[0]
        by_key = {c.key: c for c in pool}
        ring = self._ring(frozenset(by_key))
        return by_key[ring.lookup(_point(_md5(key), 0))]


_BALANCERS: dict[str, type[LoadBalance]] = {
    cls.name: cls
    for cls in (
        RandomLoadBalance,
        RoundRobinLoadBalance,
        LeastActiveLoadBalance,
        P2CLoadBalance,
        ConsistentHashLoadBalance,
    )
}

LOAD_BALANCES: tuple[str, ...] = tuple(_BALANCERS)


def load_balance(name: str) -> LoadBalance:
    """A new balancer (its state belongs to one client) for a name as Dubbo spells it
    (``loadbalance=roundrobin``); case, "_" and "-" do not matter."""
    cls = _BALANCERS.get(name.lower().replace("_", "").replace("-", ""))
    if cls is None:
        raise ValueError(
            f"unknown load balancer {name!r}; known: {', '.join(LOAD_BALANCES)}"
        )
    return cls()
