"""One thread that runs callbacks at given monotonic times: server-side deadlines and
keepalive pings, without a thread (or a ``threading.Timer``) per call.

Peers choose many of the delays (``grpc-timeout`` up to ``99999999H``), so the thread
must survive any delay and any callback, and what it holds must not outlive its use:

* a cancelled handle drops its callback at once, so a finished call with a far-future
  deadline is not kept alive by its timer until that time;
* cancelled entries are purged from the heap once they are more than half of it, so
  it stays proportional to the live timers however many calls come and go;
* waits are clamped below ``threading.TIMEOUT_MAX`` (``Condition.wait`` raises
  ``OverflowError`` above it) and a NaN delay counts as 0 (it would break heap order);
* a callback that raises is logged and the thread goes on with the next one.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Scheduler", "TimerHandle"]

log = logging.getLogger("dubbo.timer")

# The longest single wait. Any value under threading.TIMEOUT_MAX works; a due time
# further away is simply waited for in several steps.
_MAX_WAIT = 3600.0
# The heap is compacted when cancelled entries are at least this many and more than
# half of it: amortised O(1) per cancel, and a small heap is never rebuilt.
_COMPACT_MIN = 1024


class TimerHandle:
    """What ``Scheduler.call_later`` returns; ``cancel()`` it when the callback is moot."""

    __slots__ = ("when", "callback", "cancelled", "_scheduler")

    def __init__(self, when: float, callback: Callable[[], Any] | None,
                 scheduler: Scheduler | None = None) -> None:
        self.when = when
        # None once cancelled or run: the handle keeps nothing alive after that.
        self.callback = callback
        self.cancelled = False
        # The scheduler whose heap holds this handle; None once it left the heap's
        # live count (run, cancelled or the scheduler closed).
        self._scheduler = scheduler

    def cancel(self) -> None:
        """Make sure the callback will not run, and drop the reference to it now.

        A callback that the timer thread has already taken may still be running (or
        about to run) when this returns; callbacks must tolerate that.
        """
        self.cancelled = True
        scheduler = self._scheduler
        if scheduler is None:
            self.callback = None
        else:
            scheduler._cancel(self)


class Scheduler:
    """Started on first use, stopped by ``close()``. Callbacks must not block."""

    def __init__(self, name: str) -> None:
        self._name = name
        # _cond guards _heap, _cancelled, _thread, _closed and every queued handle's
        # callback/_scheduler.
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._cancelled = 0  # entries of _heap whose handle was cancelled
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_later(self, delay: float, callback: Callable[[], Any]) -> TimerHandle:
        """Run ``callback`` on the timer thread after ``delay`` seconds.

        Any delay is accepted: negative and NaN mean "now", ``inf`` means never (the
        handle still has to be cancelled to free the callback).
        """
        if math.isnan(delay):
            delay = 0.0
        handle = TimerHandle(time.monotonic() + delay, callback, self)
        with self._cond:
            if self._closed:
                handle.cancelled = True
                handle.callback = handle._scheduler = None
                return handle
            heapq.heappush(self._heap, (handle.when, next(self._seq), handle))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def _cancel(self, handle: TimerHandle) -> None:
        with self._cond:
            handle.callback = None
            if handle._scheduler is None:  # already run, or taken by close()
                return
            handle._scheduler = None
            self._cancelled += 1
            if self._cancelled >= _COMPACT_MIN and 2 * self._cancelled > len(self._heap):
                self._heap = [entry for entry in self._heap if entry[2]._scheduler is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0
                # The earliest entry may have changed; the thread recomputes its wait.
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    if not self._heap:
                        self._cond.wait()
                        continue
                    when, _, handle = self._heap[0]
                    if handle._scheduler is None:  # cancelled: discard, no wait
                        heapq.heappop(self._heap)
                        self._cancelled -= 1
                        continue
                    delay = when - time.monotonic()
                    if delay <= 0:
                        heapq.heappop(self._heap)
                        callback = handle.callback
                        handle.callback = handle._scheduler = None
                        break
                    self._cond.wait(min(delay, _MAX_WAIT))
            try:
                if callback is not None:
                    callback()
            except BaseException:  # a dead timer thread would stop every deadline
                log.exception("timer callback %r failed", callback)
            callback = None  # do not hold it while waiting for the next one

    def close(self) -> None:
        """Drop every pending callback and stop the thread (joined, unless called from it)."""
        with self._cond:
            self._closed = True
            for _, _, handle in self._heap:
                handle.callback = handle._scheduler = None
            self._heap.clear()
            self._cancelled = 0
            thread, self._thread = self._thread, None
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
