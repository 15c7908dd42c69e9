"""The server's handler threads: a bounded pool whose surplus threads retire when idle.

``concurrent.futures.ThreadPoolExecutor`` keeps every thread it ever started, so one
burst of 1,000 calls leaves 1,000 threads (and their stacks) behind for the life of the
server, and it builds a ``Future`` per task that the server never reads. ``WorkerPool``
hands each task straight to a parked worker (one lock release), starts a thread only
when none is parked and fewer than ``max_workers`` exist, queues the rest in FIFO
order, and lets a worker that has been idle for ``idle_timeout`` seconds exit while
more than ``min_workers`` threads exist.

Idle workers are woken most-recently-parked first: under a steady load the same few
threads stay busy and the others time out, so the pool shrinks to what the load needs.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerPool"]

log = logging.getLogger("dubbo.workers")


class _Worker:
    """A parked thread's mailbox: ``submit`` puts the task in ``task`` and releases
    ``wake``, which the thread is blocked acquiring (a lock used as a binary semaphore)."""

    __slots__ = ("wake", "task")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()  # held while parked; a release wakes the thread
        self.task: Callable[[], Any] | None = None


class WorkerPool:
    """Runs ``submit``-ted callables on at most ``max_workers`` daemon threads.

    Threads start on demand (``min_workers`` are not started in advance; they are the
    floor below which idle threads stop retiring). ``idle_timeout=None`` never retires
    a thread. Results are not returned: an exception from a task is logged to
    ``dubbo.workers`` and the worker goes on with the next task.

    Thread safety: every method may be called from any thread, including a worker.
    """

    def __init__(self, max_workers: int, *, min_workers: int = 0,
                 idle_timeout: float | None = 60.0, name: str = "dubbo-worker") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if not 0 <= min_workers <= max_workers:
            raise ValueError("min_workers must be between 0 and max_workers")
        if idle_timeout is not None and idle_timeout < 0:
            raise ValueError("idle_timeout must be None or >= 0")
        self.max_workers = max_workers
        self.min_workers = min_workers
        self.idle_timeout = idle_timeout
        self.name = name
        self._names = itertools.count()
        # _lock guards _count, _idle, _pending, _threads, _last_exited and _closed;
        # a _Worker's task is written by whoever pops it from _idle, under _lock.
        self._lock = threading.Lock()
        self._count = 0  # threads started and not yet exited (busy + idle)
        # Parked workers; a dict keeps insertion order, so popitem() wakes the most
        # recently parked one and `del` takes out a retiring one in O(1).
        self._idle: dict[_Worker, None] = {}
        self._pending: collections.deque[Callable[[], Any]] = collections.deque()
        self._threads: set[threading.Thread] = set()  # started, not exited
        # The thread that exited last; each exiting thread joins the one before it, so
        # joining this one joins every thread that has left _threads.
        self._last_exited: threading.Thread | None = None
        self._closed = False

    @property
    def threads(self) -> int:
        """Live worker threads, busy or idle."""
        with self._lock:
            return self._count

    @property
    def idle(self) -> int:
        """Workers parked waiting for a task."""
        with self._lock:
            return len(self._idle)

    @property
    def pending(self) -> int:
        """Tasks queued because all ``max_workers`` threads are busy."""
        with self._lock:
            return len(self._pending)

    def submit(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on a worker: a parked one, else a new thread if the pool is
        below ``max_workers``, else after the tasks already queued.
        Raises RuntimeError once ``shutdown`` has been called."""
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a worker pool that was shut down")
            if self._idle:
                worker = self._idle.popitem()[0]
                worker.task = fn
                worker.wake.release()
                return
            if self._count >= self.max_workers:
                self._pending.append(fn)
                return
            # Started under the lock (as ThreadPoolExecutor does), so shutdown() never
            # sees a thread in _threads that cannot be joined yet.
            # The first task goes in the mailbox, not in args: Thread keeps its args
            # until the thread ends, which would keep that call alive as long.
            worker = _Worker()
            worker.task = fn
            thread = threading.Thread(target=self._work, args=(worker,),
                                      name=f"{self.name}-{next(self._names)}", daemon=True)
            self._count += 1
            self._threads.add(thread)
            try:
                thread.start()
            except BaseException:  # "can't start new thread": let a running worker take it
                self._count -= 1
                self._threads.discard(thread)
                if not self._count:
                    raise
                self._pending.append(fn)
                log.warning("could not start a worker thread; task queued", exc_info=True)

    def shutdown(self, wait: bool = True, cancel_pending: bool = True,
                 timeout: float | None = None) -> list[Callable[[], Any]]:
        """Refuse new tasks and let workers exit once they are done.

        Queued tasks are dropped if ``cancel_pending`` (and returned, so the caller can
        fail them), else run first. Idle workers exit at once; running tasks are not
        interrupted. With ``wait``, join the workers, for at most ``timeout`` seconds
        in all (a worker calling this does not join itself)."""
        with self._lock:
            self._closed = True
            dropped: list[Callable[[], Any]] = []
            if cancel_pending:
                dropped = list(self._pending)
                self._pending.clear()
            for worker in self._idle:
                worker.task = None  # no task: exit
                worker.wake.release()
            self._idle.clear()
            threads = list(self._threads)
            if self._last_exited is not None:
                threads.append(self._last_exited)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            me = threading.current_thread()
            for thread in threads:
                if thread is me:
                    continue
                if deadline is None:
                    thread.join()
                else:
                    thread.join(max(0.0, deadline - time.monotonic()))
        return dropped

    def _work(self, worker: _Worker) -> None:
        me = threading.current_thread()
        fn, worker.task = worker.task, None
        lock = self._lock
        counted = True  # this thread is still in _count
        try:
            while True:
                if fn is not None:
                    try:
                        fn()
                    except BaseException:
                        log.exception("worker task %r failed", fn)
                    fn = None  # an idle worker must not keep its last call (and buffers) alive
                with lock:
                    if self._pending:
                        fn = self._pending.popleft()
                        continue
                    if self._closed:
                        self._count -= 1
                        counted = False
                        return
                    self._idle[worker] = None
                # Parked until submit() or shutdown() pops us from _idle and releases wake.
                wait = -1.0 if self.idle_timeout is None else self.idle_timeout
                while not worker.wake.acquire(timeout=wait):
                    with lock:
                        if worker not in self._idle:  # popped just as our wait ran out
                            worker.wake.acquire()  # released under the lock: returns at once
                            break
                        if self._count > self.min_workers:
                            # Decided and counted out in one hold of the lock, so two
                            # retiring workers cannot both take the pool below the floor.
                            del self._idle[worker]
                            self._count -= 1
                            counted = False
                            return
                    # At the floor. Only a spawn could lift _count, and submit() spawns
                    # only when no worker is parked, so there is nothing to time out for.
                    wait = -1.0
                fn, worker.task = worker.task, None  # None: shutdown() woke us
        finally:
            with lock:
                if counted:  # left by an unexpected error
                    self._count -= 1
                    self._idle.pop(worker, None)
                self._threads.discard(me)
                previous, self._last_exited = self._last_exited, me
            if previous is not None:
                previous.join()
