"""Load balancers (issue 8): the distribution each one promises over a provider list,
sans-I/O, with seeded random sources so every run draws the same numbers."""

from __future__ import annotations

import collections
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from dubbo.cluster import loadbalance
from dubbo.cluster.loadbalance import (
    LOAD_BALANCES,
    ConsistentHashLoadBalance,
    LeastActiveLoadBalance,
    LoadBalance,
    P2CLoadBalance,
    RandomLoadBalance,
    RoundRobinLoadBalance,
    load_balance,
)


@dataclass
class Ep:
    key: str
    weight: int = 100
    active: int = 0


def eps(*weights: int) -> list[Ep]:
    return [Ep(f"127.0.0.1:{20880 + i}", w) for i, w in enumerate(weights)]


def rng() -> random.Random:
    return random.Random(20240808)


ALL = [RandomLoadBalance, RoundRobinLoadBalance, LeastActiveLoadBalance, P2CLoadBalance,
       ConsistentHashLoadBalance]


def shares(lb: LoadBalance, candidates: Sequence[Ep], picks: int,
           keyed: bool = False) -> dict[str, float]:
    counts = collections.Counter(
        lb.select(candidates, f"req-{i}".encode() if keyed else None).key for i in range(picks))
    return {c.key: counts[c.key] / picks for c in candidates}


# -- every balancer ----------------------------------------------------------------------

@pytest.mark.parametrize("cls", ALL)
def test_weight_zero_never_picked_while_others_positive(cls: type[LoadBalance]) -> None:
    candidates = eps(100, 0, 300)
    got = shares(cls(rng=rng()), candidates, 3000, keyed=True)
    assert got[candidates[1].key] == 0
    assert got[candidates[0].key] > 0 and got[candidates[2].key] > 0


@pytest.mark.parametrize("cls", ALL)
def test_all_weights_zero_count_as_equal(cls: type[LoadBalance]) -> None:
    candidates = eps(0, 0, 0)
    got = shares(cls(rng=rng()), candidates, 3000, keyed=True)
    assert all(0.2 < share < 0.47 for share in got.values()), got


@pytest.mark.parametrize("cls", ALL)
def test_single_candidate_is_returned(cls: type[LoadBalance]) -> None:
    only = Ep("127.0.0.1:1", weight=0, active=7)
    assert cls(rng=rng()).select([only], b"x") is only


# -- random ------------------------------------------------------------------------------

def test_random_honours_weights() -> None:
    candidates = eps(100, 200, 300)
    got = shares(RandomLoadBalance(rng=rng()), candidates, 60_000)
    for c, expected in zip(candidates, (1 / 6, 2 / 6, 3 / 6), strict=True):
        assert abs(got[c.key] - expected) < 0.01, got


def test_random_equal_weights_uniform() -> None:
    candidates = eps(100, 100, 100, 100, 100, 100)
    got = shares(RandomLoadBalance(rng=rng()), candidates, 60_000)
    assert all(abs(share - 1 / 6) < 0.01 for share in got.values()), got


# -- round-robin -------------------------------------------------------------------------

def test_round_robin_equal_weights_exact_sequence() -> None:
    a, b, c = eps(100, 100, 100)
    lb = RoundRobinLoadBalance()
    assert [lb.select([a, b, c]) for _ in range(9)] == [a, b, c] * 3


def test_round_robin_smooth_weighted_sequence() -> None:
    a, b, c = eps(5, 1, 1)
    lb = RoundRobinLoadBalance()
    seq = "".join("abc"[[a, b, c].index(lb.select([a, b, c]))] for _ in range(14))
    assert seq == "aabacaa" * 2


def test_round_robin_state_is_per_key_not_per_object() -> None:
    """The caller may hand over fresh endpoint objects each call (a new provider list)."""
    lb = RoundRobinLoadBalance()
    seq = "".join(lb.select(eps(5, 1, 1)).key[-1] for _ in range(7))
    assert seq == "0010200"


def test_round_robin_retry_without_one_keeps_the_others_turns() -> None:
    """A failover retry leaves out the provider that failed; the rotation carries on."""
    a, b, c = eps(100, 100, 100)
    lb = RoundRobinLoadBalance()
    assert lb.select([a, b, c]) is a
    assert lb.select([a, c]) is c      # retry of the call that failed on b
    # b kept its place: the rotation over all three goes on with b, each equally often.
    assert [lb.select([a, b, c]) for _ in range(300)] == [b, c, a] * 100


def test_round_robin_weight_change_takes_effect() -> None:
    a, b = eps(100, 100)
    lb = RoundRobinLoadBalance()
    for _ in range(10):
        lb.select([a, b])
    b.weight = 300
    counts = collections.Counter(lb.select([a, b]).key for _ in range(400))
    assert counts == {a.key: 100, b.key: 300}


def test_round_robin_forgets_providers_gone_for_the_recycle_period() -> None:
    now = [0.0]
    lb = RoundRobinLoadBalance(clock=lambda: now[0], recycle_period=60.0)
    stable = eps(100, 100)
    for round_ in range(50):       # 50 providers come and go over time (new ports)
        now[0] = round_ * 10.0
        lb.select([*stable, Ep(f"127.0.0.1:{30000 + round_}")])
    # Only the providers seen in the last 60 s are remembered: 2 + 7, not 52.
    assert len(lb._counters) == 2 + 7
    now[0] += 61.0
    lb.select(stable)
    assert set(lb._counters) == {c.key for c in stable}


def test_round_robin_thread_safe_exact_counts() -> None:
    """Under the lock the smooth sequence is the same whatever the interleaving, so 8
    threads' picks add up to exactly the weights' shares."""
    candidates = eps(5, 1, 1)
    lb = RoundRobinLoadBalance()
    per_thread = 2100
    totals: list[collections.Counter[str]] = []
    start = threading.Barrier(8)

    def worker() -> None:
        counts: collections.Counter[str] = collections.Counter()
        start.wait(timeout=10)
        for _ in range(per_thread):
            counts[lb.select(candidates).key] += 1
        totals.append(counts)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    total = sum(totals, collections.Counter())
    assert sum(total.values()) == 8 * per_thread
    assert total == {candidates[0].key: 12000, candidates[1].key: 2400,
                     candidates[2].key: 2400}


# -- least-active ------------------------------------------------------------------------

def test_least_active_prefers_the_idle_one() -> None:
    a, b, c = eps(100, 100, 100)
    a.active, b.active, c.active = 3, 0, 2
    lb = LeastActiveLoadBalance(rng=rng())
    assert all(lb.select([a, b, c]) is b for _ in range(1000))
    # Not the weight: a heavy but busy provider still loses to a light idle one.
    a.weight, b.weight = 1000, 1
    assert all(lb.select([a, b, c]) is b for _ in range(1000))


def test_least_active_ties_broken_by_weighted_random() -> None:
    a, b, c = eps(100, 300, 500)
    c.active = 1
    got = shares(LeastActiveLoadBalance(rng=rng()), [a, b, c], 20_000)
    assert got[c.key] == 0
    assert abs(got[a.key] - 0.25) < 0.015 and abs(got[b.key] - 0.75) < 0.015, got


# -- p2c ---------------------------------------------------------------------------------

def test_p2c_never_picks_the_busiest_of_three_when_others_idle() -> None:
    a, b, c = eps(100, 100, 100)
    b.active = 5
    got = shares(P2CLoadBalance(rng=rng()), [a, b, c], 6000)
    assert got[b.key] == 0
    assert abs(got[a.key] - 0.5) < 0.03, got


def test_p2c_spreads_when_all_equally_busy() -> None:
    candidates = eps(100, 100, 100, 100)
    for c in candidates:
        c.active = 2
    got = shares(P2CLoadBalance(rng=rng()), candidates, 20_000)
    assert all(abs(share - 0.25) < 0.02 for share in got.values()), got


def test_p2c_picks_the_less_busy_of_two_and_weights_ties() -> None:
    a, b = eps(100, 300)
    a.active = 1
    lb = P2CLoadBalance(rng=rng())
    assert all(lb.select([a, b]) is b for _ in range(500))
    a.active, b.active = 0, 4
    assert all(lb.select([a, b]) is a for _ in range(500))
    b.active = 0   # tie: the heavier one more often, the lighter one still sometimes
    got = shares(lb, [a, b], 20_000)
    assert abs(got[b.key] - 0.75) < 0.015, got


# -- consistent hash ---------------------------------------------------------------------

KEYS = [f"request-{i}".encode() for i in range(10_000)]


def owners(lb: LoadBalance, candidates: Sequence[Ep]) -> list[str]:
    return [lb.select(candidates, k).key for k in KEYS]


def test_consistent_hash_stable_for_a_key() -> None:
    candidates = eps(100, 100, 100, 100, 100)
    first = ConsistentHashLoadBalance(rng=rng())
    other = ConsistentHashLoadBalance(rng=random.Random(1))
    reference = owners(first, candidates)
    shuffled = candidates[::-1]
    fresh_objects = [Ep(c.key, c.weight, c.active + 3) for c in candidates]
    assert owners(first, candidates) == reference
    assert owners(other, shuffled) == reference            # another client, another order
    assert owners(first, fresh_objects) == reference       # weights/actives do not matter
    # And every provider gets a fair share of the keys (160 points each).
    counts = collections.Counter(reference)
    assert all(0.1 < n / len(KEYS) < 0.3 for n in counts.values()), counts


def test_consistent_hash_returns_the_callers_current_object() -> None:
    lb = ConsistentHashLoadBalance()
    lb.select(eps(100, 100, 100), b"k")
    now = eps(100, 100, 100)
    assert any(lb.select(now, b"k") is c for c in now)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_consistent_hash_provider_leaving_moves_only_its_keys(n: int) -> None:
    candidates = eps(*[100] * n)
    lb = ConsistentHashLoadBalance()
    before = owners(lb, candidates)
    leaver = candidates[n // 2]
    after = owners(lb, [c for c in candidates if c is not leaver])
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert 0.5 / n <= len(moved) / len(KEYS) <= 1.5 / n, len(moved)
    assert all(before[i] == leaver.key for i in moved)   # nobody else's key moved
    assert len(moved) == before.count(leaver.key)        # and all of the leaver's did
    # It comes back: every key returns to where it was.
    assert owners(lb, candidates) == before


def test_consistent_hash_provider_joining_takes_only_its_share() -> None:
    candidates = eps(100, 100, 100, 100)
    lb = ConsistentHashLoadBalance()
    before = owners(lb, candidates)
    joiner = Ep("127.0.0.1:30000")
    after = owners(lb, [*candidates, joiner])
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert all(after[i] == joiner.key for i in moved)
    assert 0.5 / 5 <= len(moved) / len(KEYS) <= 1.5 / 5


def test_consistent_hash_ring_rebuilt_only_when_key_set_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[frozenset[str]] = []
    real = loadbalance._Ring

    class CountingRing(real):  # type: ignore[valid-type, misc]
        def __init__(self, keys: frozenset[str], replicas: int) -> None:
            built.append(keys)
            super().__init__(keys, replicas)

    monkeypatch.setattr(loadbalance, "_Ring", CountingRing)
    lb = ConsistentHashLoadBalance()
    candidates = eps(100, 100, 100)
    for i in range(300):   # new objects, other orders, other loads: same ring
        again = [Ep(c.key, c.weight, i % 4) for c in candidates]
        random.Random(i).shuffle(again)
        lb.select(again, b"%d" % i)
    assert len(built) == 1
    lb.select(candidates[:2], b"x")     # a retry without one provider
    lb.select(candidates, b"x")         # and the full set again: still cached
    assert len(built) == 2


def test_consistent_hash_shared_by_threads_over_changing_lists() -> None:
    """8 threads, each alternating between the full list and the list minus one (as
    retries do), always get the answer a lone thread gets."""
    candidates = eps(100, 100, 100, 100)
    lists = [candidates, candidates[1:], candidates[:3], candidates[::2]]
    keys = KEYS[:500]
    alone = ConsistentHashLoadBalance()
    expected = [[alone.select(sub, k).key for k in keys] for sub in lists]
    lb = ConsistentHashLoadBalance()
    wrong: list[str] = []
    start = threading.Barrier(8)

    def worker(offset: int) -> None:
        start.wait(timeout=10)
        for i, k in enumerate(keys):
            which = (i + offset) % len(lists)
            if lb.select(lists[which], k).key != expected[which][i]:
                wrong.append(f"{which}/{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert wrong == []


def test_consistent_hash_without_key_is_weighted_random() -> None:
    candidates = eps(100, 300)
    got = shares(ConsistentHashLoadBalance(rng=rng()), candidates, 20_000)
    assert abs(got[candidates[1].key] - 0.75) < 0.015, got


def test_consistent_hash_ring_is_dubbo_javas() -> None:
    """The ring and lookups Dubbo Java's ConsistentHashSelector computes for the same
    addresses (values from running its hash and TreeMap.ceilingEntry under javac 17):
    a Java and a Python consumer place providers at the same points."""
    addresses = ["10.0.0.1:20880", "10.0.0.2:20880", "10.0.0.3:20880"]
    ring = loadbalance._Ring(frozenset(addresses), 160)
    assert len(ring.points) == 480
    assert (ring.points[0], ring.points[-1], sum(ring.points)) == (
        4712220, 4291552516, 1032932016698)
    java = {"hello": 2, "world": 2, "dubbo": 2, "request-1": 1, "request-2": 3,
            "x": 2, "y": 1, "z": 3}
    lb = ConsistentHashLoadBalance()
    candidates = [Ep(a) for a in addresses]
    for key, host in java.items():
        assert lb.select(candidates, key.encode()).key == f"10.0.0.{host}:20880", key


# -- by name -----------------------------------------------------------------------------

def test_load_balance_by_name() -> None:
    assert set(LOAD_BALANCES) == {"random", "roundrobin", "leastactive", "p2c",
                                  "consistenthash"}
    for name in LOAD_BALANCES:
        lb = load_balance(name)
        assert lb.name == name
        assert load_balance(name) is not lb          # state is per client
    assert isinstance(load_balance("RoundRobin"), RoundRobinLoadBalance)
    assert isinstance(load_balance("least_active"), LeastActiveLoadBalance)
    assert isinstance(load_balance("ConsistentHash"), ConsistentHashLoadBalance)


def test_unknown_load_balance_name_raises_listing_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        load_balance("fastest")
    message = str(info.value)
    assert "fastest" in message
    assert all(name in message for name in LOAD_BALANCES)
    with pytest.raises(ValueError):
        load_balance("")
