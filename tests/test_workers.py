"""WorkerPool: the server's handler threads. Bounded, FIFO beyond the bound, and a burst
does not keep its threads: surplus idle workers retire after idle_timeout."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref

import pytest
from peers import Overlap

from dubbo.server.workers import WorkerPool

NAME = "dubbo-test-pool"


def wait_until(predicate, timeout: float, interval: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(NAME) and t.is_alive()]


@pytest.fixture
def make_pool():
    """Pools made here are shut down (and joined) at teardown, even if a test fails."""
    pools: list[WorkerPool] = []
    gates: list[threading.Event] = []  # opened at teardown so no task blocks the join

    def make(max_workers: int, **kwargs) -> WorkerPool:
        pool = WorkerPool(max_workers, name=NAME, **kwargs)
        pools.append(pool)
        return pool

    def gate() -> threading.Event:
        gates.append(threading.Event())
        return gates[-1]

    make.gate = gate
    yield make
    for gate in gates:
        gate.set()
    for pool in pools:
        pool.shutdown(wait=True, timeout=5)


def test_runs_every_task(make_pool):
    pool = make_pool(4)
    done: list[int] = []
    lock = threading.Lock()
    finished = threading.Semaphore(0)

    def task(i: int) -> None:
        with lock:
            done.append(i)
        finished.release()

    for i in range(100):
        pool.submit(lambda i=i: task(i))
    for _ in range(100):
        assert finished.acquire(timeout=5)
    assert sorted(done) == list(range(100))


def test_threads_are_named_daemons(make_pool):
    pool = make_pool(2)
    seen: list[threading.Thread] = []
    ran = threading.Event()
    pool.submit(lambda: (seen.append(threading.current_thread()), ran.set()))
    assert ran.wait(5)
    assert seen[0].name == f"{NAME}-0"
    assert seen[0].daemon


def test_at_most_max_workers_run_at_once(make_pool):
    pool = make_pool(4)
    overlap = Overlap()
    finished = threading.Semaphore(0)

    def task() -> None:
        with overlap.running():
            time.sleep(0.01)
        finished.release()

    for _ in range(40):
        pool.submit(task)
    assert pool.threads <= 4
    for _ in range(40):
        assert finished.acquire(timeout=5)
    assert overlap.peak == 4  # all four used, never a fifth
    assert pool.threads == 4


def test_extra_tasks_queue_and_run_in_fifo_order(make_pool):
    pool = make_pool(1)
    gate = make_pool.gate()
    order: list[int] = []
    pool.submit(gate.wait)
    for i in range(20):
        pool.submit(lambda i=i: order.append(i))
    assert pool.pending == 20
    assert pool.threads == 1
    assert order == []
    gate.set()
    assert wait_until(lambda: len(order) == 20, 5)
    assert order == list(range(20))
    assert pool.pending == 0


def test_a_parked_worker_is_reused_not_a_new_thread(make_pool):
    pool = make_pool(8)
    for _ in range(50):
        ran = threading.Event()
        pool.submit(ran.set)
        assert ran.wait(5)
        assert wait_until(lambda: pool.idle == 1, 5)
    assert pool.threads == 1


def test_idle_workers_retire_down_to_min_workers(make_pool):
    pool = make_pool(8, min_workers=2, idle_timeout=0.2)
    gate = make_pool.gate()
    started = threading.Semaphore(0)

    def task() -> None:
        started.release()
        gate.wait()

    for _ in range(8):
        pool.submit(task)
    for _ in range(8):
        assert started.acquire(timeout=5)
    assert pool.threads == 8
    gate.set()
    assert wait_until(lambda: pool.threads == 2, 3)
    # The floor holds: nothing else retires, and the two left still take work.
    time.sleep(0.5)
    assert pool.threads == 2
    assert pool.idle == 2
    assert len(pool_threads()) == 2
    ran = threading.Event()
    pool.submit(ran.set)
    assert ran.wait(5)
    assert pool.threads == 2


def test_all_idle_workers_retire_with_no_floor(make_pool):
    pool = make_pool(4, idle_timeout=0.2)
    ran = threading.Event()
    pool.submit(ran.set)
    assert ran.wait(5)
    assert wait_until(lambda: pool.threads == 0, 3)
    assert wait_until(lambda: not pool_threads(), 3)
    # And the pool starts a thread again when work comes.
    ran.clear()
    pool.submit(ran.set)
    assert ran.wait(5)


def test_idle_timeout_none_never_retires(make_pool):
    pool = make_pool(3, idle_timeout=None)
    gate = make_pool.gate()
    for _ in range(3):
        pool.submit(gate.wait)
    assert pool.threads == 3
    gate.set()
    assert wait_until(lambda: pool.idle == 3, 5)
    time.sleep(0.4)
    assert pool.threads == 3


def test_workers_at_the_floor_park_without_spinning(make_pool):
    """idle_timeout=0 retires surplus workers at once; the floor ones must then sleep."""
    pool = make_pool(4, min_workers=2, idle_timeout=0)
    gate = make_pool.gate()
    for _ in range(4):
        pool.submit(gate.wait)
    gate.set()
    assert wait_until(lambda: pool.threads == 2 and pool.idle == 2, 5)
    cpu = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - cpu < 0.1
    assert pool.threads == 2


def test_a_burst_of_200_shrinks_back_when_idle(make_pool):
    pool = make_pool(200, idle_timeout=0.2)
    gate = make_pool.gate()
    overlap = Overlap()
    started = threading.Semaphore(0)

    def task() -> None:
        with overlap.running():
            started.release()
            gate.wait()

    for _ in range(200):
        pool.submit(task)
    for _ in range(200):
        assert started.acquire(timeout=10)
    assert overlap.peak == 200
    assert pool.threads == 200
    gate.set()
    assert wait_until(lambda: pool.threads == 0, 5)
    assert wait_until(lambda: not pool_threads(), 5)


def test_tasks_racing_retirement_all_run(make_pool):
    """Submits that land just as a parked worker's wait runs out must not be lost."""
    pool = make_pool(4, idle_timeout=0.001)
    count = [0]
    lock = threading.Lock()

    def task() -> None:
        with lock:
            count[0] += 1

    for round_ in range(200):
        for _ in range(1 + round_ % 5):
            pool.submit(task)
        time.sleep(0.001 * (round_ % 3))
    expected = sum(1 + r % 5 for r in range(200))
    assert wait_until(lambda: count[0] == expected, 5), (count[0], expected)
    assert pool.threads <= 4


def test_an_exception_is_logged_and_the_worker_goes_on(make_pool, caplog):
    pool = make_pool(1)
    ran = threading.Event()

    def boom() -> None:
        raise ValueError("handler bug")

    with caplog.at_level(logging.ERROR, logger="dubbo.workers"):
        pool.submit(boom)
        pool.submit(ran.set)
        assert ran.wait(5)
    records = [r for r in caplog.records if r.name == "dubbo.workers"]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], ValueError)
    assert pool.threads == 1  # the same worker ran the next task


def test_an_idle_worker_does_not_keep_its_last_task_alive(make_pool):
    """A finished call (with its buffers) must be freed, not held by a parked thread."""
    pool = make_pool(1, idle_timeout=None)

    class Task:
        def __call__(self) -> None:
            pass

    task = Task()
    ref = weakref.ref(task)
    pool.submit(task)
    del task
    assert wait_until(lambda: pool.idle == 1, 5)
    gc.collect()
    assert ref() is None


def test_submit_after_shutdown_raises(make_pool):
    pool = make_pool(2)
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_shutdown_wait_joins_every_thread(make_pool):
    pool = make_pool(4)
    gate = make_pool.gate()
    finished = threading.Event()

    def slow() -> None:
        gate.wait()
        time.sleep(0.1)
        finished.set()

    pool.submit(slow)
    for _ in range(3):
        pool.submit(lambda: None)
    assert wait_until(lambda: pool.idle >= 1, 5)  # some idle, one busy
    gate.set()
    pool.shutdown(wait=True)
    assert finished.is_set()  # the running task was waited for, not interrupted
    assert pool_threads() == []  # joined: none left, not even one still returning
    assert pool.threads == 0


def test_shutdown_drops_pending_and_returns_them(make_pool):
    pool = make_pool(1)
    gate = make_pool.gate()
    ran: list[int] = []
    pool.submit(gate.wait)
    queued = [lambda i=i: ran.append(i) for i in range(5)]
    for task in queued:
        pool.submit(task)
    dropped = pool.shutdown(wait=False)
    assert dropped == queued
    assert pool.pending == 0
    gate.set()
    pool.shutdown(wait=True)
    assert ran == []
    assert pool_threads() == []


def test_shutdown_without_cancel_runs_pending_first(make_pool):
    pool = make_pool(1)
    gate = make_pool.gate()
    ran: list[int] = []
    pool.submit(gate.wait)
    for i in range(5):
        pool.submit(lambda i=i: ran.append(i))
    assert pool.shutdown(wait=False, cancel_pending=False) == []
    gate.set()
    pool.shutdown(wait=True, cancel_pending=False)
    assert ran == list(range(5))
    assert pool_threads() == []


def test_shutdown_wait_gives_up_after_timeout(make_pool):
    pool = make_pool(2)
    gate = make_pool.gate()
    pool.submit(gate.wait)
    assert wait_until(lambda: pool.threads == 1, 5)
    started = time.monotonic()
    pool.shutdown(wait=True, timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2
    assert len(pool_threads()) == 1  # the stuck task still runs; teardown frees it
    gate.set()
    pool.shutdown(wait=True, timeout=5)
    assert pool_threads() == []


def test_shutdown_from_a_worker_does_not_deadlock(make_pool):
    pool = make_pool(2)
    returned = threading.Event()

    def stop() -> None:
        pool.shutdown(wait=True, timeout=5)
        returned.set()

    pool.submit(stop)
    assert returned.wait(5)
    pool.shutdown(wait=True)
    assert pool_threads() == []


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        WorkerPool(0)
    with pytest.raises(ValueError):
        WorkerPool(2, min_workers=3)
    with pytest.raises(ValueError):
        WorkerPool(2, idle_timeout=-1)
