"""The timer thread behind server deadlines, keepalive and batched flushes: it must
survive any delay and any callback, and hold nothing for a call once its timer is
cancelled (issue 7: a cancelled deadline timer kept a whole call alive)."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref

import pytest

from dubbo.transport.timer import Scheduler, TimerHandle

NAME = "dubbo-test-timer"  # "dubbo" prefix: conftest fails the test if it is left running


@pytest.fixture
def scheduler():
    s = Scheduler(NAME)
    yield s
    s.close()


def _thread() -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == NAME), None)


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


class _Call:
    """Stands for a server call: big, and reachable from its deadline callback."""

    def __init__(self) -> None:
        self.headers = bytearray(60 * 1024)

    def expire(self) -> None:
        raise AssertionError("a cancelled timer ran")


def test_cancel_releases_the_callback_while_the_timer_is_far_in_the_future(scheduler):
    call = _Call()
    ref = weakref.ref(call)
    handle = scheduler.call_later(1e6, call.expire)
    del call
    gc.collect()
    assert ref() is not None  # the pending timer is what keeps the call alive...
    handle.cancel()
    gc.collect()
    assert ref() is None  # ...and cancelling it lets the call go at once
    assert handle.callback is None and handle.cancelled


def test_a_fired_handle_holds_nothing(scheduler):
    call = _Call()
    ref = weakref.ref(call)
    ran = threading.Event()

    def callback(c=call):
        ran.set()

    handle = scheduler.call_later(0, callback)
    del call, callback
    assert ran.wait(5)
    assert _wait_for(lambda: handle.callback is None)
    gc.collect()
    assert ref() is None


def test_the_heap_stays_bounded_under_call_and_cancel_churn(scheduler):
    # 100k calls that each arm a far deadline and finish: the heap must track the live
    # timers, not every timer ever cancelled.
    live = [scheduler.call_later(1e6 + i, lambda: None) for i in range(100)]
    peak = 0
    for i in range(100_000):
        scheduler.call_later(1e5 + (i % 997), lambda: None).cancel()
        peak = max(peak, len(scheduler._heap))
    assert peak <= 2 * 1024 + 100 + 1, peak
    # Compaction kept every live timer, and they still fire in order.
    fired: list[int] = []
    soon = [scheduler.call_later(0.01 * (3 - i), lambda i=i: fired.append(i)) for i in range(3)]
    assert _wait_for(lambda: len(fired) == 3)
    assert fired == [2, 1, 0]
    assert all(h.callback is None for h in soon)
    assert sum(1 for _, _, h in scheduler._heap if h in live) == 100
    for h in live:
        h.cancel()


@pytest.mark.parametrize("delay", [float("inf"), 1e12, 99_999_999 * 3600.0, 1e300])
def test_a_huge_delay_does_not_stop_the_thread(scheduler, delay):
    # Alone in the heap, the huge entry is what the thread waits for: Condition.wait
    # raises OverflowError past threading.TIMEOUT_MAX, which used to kill the thread.
    far = scheduler.call_later(delay, lambda: pytest.fail("ran early"))
    assert _wait_for(lambda: _thread() is not None)
    time.sleep(0.05)  # let the thread reach its wait for the huge delay
    ran = threading.Event()
    scheduler.call_later(0.01, ran.set)
    assert ran.wait(5), "timer thread died"
    assert _thread() is not None and _thread().is_alive()
    far.cancel()


def test_nan_and_negative_delays_run_now_and_keep_order_sane(scheduler):
    order: list[str] = []
    scheduler.call_later(0.05, lambda: order.append("later"))
    scheduler.call_later(float("nan"), lambda: order.append("nan"))
    scheduler.call_later(-5, lambda: order.append("negative"))
    assert _wait_for(lambda: len(order) == 3)
    assert order[-1] == "later"
    assert sorted(order[:2]) == ["nan", "negative"]


def test_a_raising_callback_is_logged_and_the_next_one_still_runs(scheduler, caplog):
    def boom():
        raise RuntimeError("callback failed on purpose")

    def exit_():
        raise SystemExit(3)

    ran = threading.Event()
    with caplog.at_level(logging.ERROR, logger="dubbo.timer"):
        scheduler.call_later(0, boom)
        scheduler.call_later(0.001, exit_)
        scheduler.call_later(0.02, ran.set)
        assert ran.wait(5), "a raising callback stopped the timer thread"
    failures = [r for r in caplog.records if r.name == "dubbo.timer"]
    assert len(failures) == 2
    assert failures[0].exc_info[0] is RuntimeError
    assert failures[1].exc_info[0] is SystemExit


def test_callbacks_run_in_time_order_and_fifo_on_ties(scheduler):
    order: list[int] = []
    delays = [0.06, 0.02, 0.04, 0.02, 0.0, 0.06, 0.04, 0.0]
    for i, delay in enumerate(delays):
        scheduler.call_later(delay, lambda i=i: order.append(i))
    assert _wait_for(lambda: len(order) == len(delays))
    assert order == sorted(range(len(delays)), key=lambda i: (delays[i], i))


def test_callbacks_do_not_run_early(scheduler):
    start = time.monotonic()
    ran_at: list[float] = []
    scheduler.call_later(0.1, lambda: ran_at.append(time.monotonic()))
    assert _wait_for(lambda: ran_at)
    assert ran_at[0] - start >= 0.1


def test_an_earlier_timer_wakes_the_thread(scheduler):
    scheduler.call_later(30, lambda: None)
    assert _wait_for(lambda: _thread() is not None)
    time.sleep(0.02)  # the thread now waits for the 30 s entry
    ran = threading.Event()
    start = time.monotonic()
    scheduler.call_later(0.01, ran.set)
    assert ran.wait(5)
    assert time.monotonic() - start < 1.0


def test_cancelled_callbacks_never_run(scheduler):
    ran: list[int] = []
    handles = [scheduler.call_later(0.01, lambda i=i: ran.append(i)) for i in range(10)]
    for h in handles[::2]:
        h.cancel()
    assert _wait_for(lambda: len(ran) == 5)
    time.sleep(0.03)
    assert ran == [1, 3, 5, 7, 9]


def test_close_joins_the_thread_and_drops_pending_callbacks():
    s = Scheduler(NAME)
    call = _Call()
    ref = weakref.ref(call)
    handle = s.call_later(1e6, call.expire)
    del call
    assert _wait_for(lambda: _thread() is not None)
    s.close()
    assert _thread() is None  # joined, not merely told to stop
    gc.collect()
    assert ref() is None and handle.callback is None
    late = s.call_later(0, lambda: pytest.fail("ran after close"))
    assert isinstance(late, TimerHandle) and late.cancelled
    assert _thread() is None  # closing for good: no new thread
    late.cancel()  # harmless
    s.close()  # idempotent


def test_close_from_a_callback_does_not_deadlock():
    s = Scheduler(NAME)
    done = threading.Event()

    def closing():
        s.close()
        done.set()

    s.call_later(0, closing)
    assert done.wait(5)
    assert _wait_for(lambda: _thread() is None)
