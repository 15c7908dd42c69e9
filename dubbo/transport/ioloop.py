"""A selector thread that reads many sockets, so an idle connection costs no thread.

The server runs one ``IOLoop`` for its listening socket and every connection; each
client connection runs its own. Sockets are non-blocking: the loop reads whatever is
ready, and writes what other threads could not (they never wait on a socket, see
``H2Transport.flush``). Handlers run on the loop thread and must never block.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["IOLoop", "Readiness"]

log = logging.getLogger("dubbo.ioloop")

RECV_SIZE = 256 * 1024  # one read buffer per loop, reused by every connection


class Readiness(Protocol):
    """What the loop drives: a socket and what to do when it is ready."""

    sock: socket.socket

    def on_ready(self, readable: bool, writable: bool) -> None: ...


class _Waker:
    """What wakes the loop's select from another thread: an eventfd where there is one
    (one descriptor, one system call to make; a client makes a loop per connection),
    else a socketpair. Non-blocking; a wake-up already pending makes a new one free.
    ``wake`` and ``close`` run under ``IOLoop._lock``: a raw descriptor written after
    it was closed could be another file's by then."""

    def __init__(self) -> None:
        self._fd = -1
        self._pair: tuple[socket.socket, socket.socket] | None = None
        eventfd = getattr(os, "eventfd", None)
        if eventfd is not None:
            try:
                self._fd = eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                return
            except OSError:  # pragma: no cover - a kernel without eventfd
                pass
        reader, writer = self._pair = socket.socketpair()  # pragma: no cover - not Linux
        reader.setblocking(False)
        writer.setblocking(False)

    def fileno(self) -> int:
        return self._fd if self._pair is None else self._pair[0].fileno()

    def wake(self) -> None:
        try:
            if self._pair is None:
                os.eventfd_write(self._fd, 1)
            else:
                self._pair[1].send(b"\0")
        except OSError:  # full (or closed): a wake-up is pending anyway
            pass

    def drain(self) -> None:
        try:
            if self._pair is None:
                os.eventfd_read(self._fd)
            else:
                while self._pair[0].recv(4096):
                    pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        if self._pair is None:
            fd, self._fd = self._fd, -1
            if fd != -1:
                os.close(fd)
        else:
            for sock in self._pair:
                sock.close()


class IOLoop:
    """``_lock`` guards ``_pending``, ``_closed``, ``_thread`` and the waker; the
    selector and ``buffer`` belong to the loop thread alone (other threads ask through
    ``call_soon``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._selector = selectors.DefaultSelector()
        self._wake = _Waker()
        self._selector.register(self._wake.fileno(), selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending: collections.deque[Callable[[], None]] = collections.deque()
        self._woken = False  # a wake-up byte is in flight (under _lock)
        self._closed = False
        self._thread: threading.Thread | None = None  # set once, under _lock
        self._deferred = False  # start_later() was called and the thread is not running
        self.buffer = bytearray(RECV_SIZE)
        self.view = memoryview(self.buffer)
        # One timed callback (a client's connect timeout), without a timer thread.
        self._alarm: tuple[float, Callable[[], None]] | None = None  # loop thread only

    def set_alarm(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop after ``delay`` s (before start(), or on the loop)."""
        self._alarm = (time.monotonic() + delay, fn)

    def cancel_alarm(self) -> None:
        self._alarm = None

    def start(self) -> None:
        """Start the loop thread (once: later calls do nothing)."""
        with self._lock:
            self._deferred = False
            if self._thread is not None or self._closed:
                return
            thread = self._thread = threading.Thread(target=self._run, name=self.name,
                                                     daemon=True)
        thread.start()

    def start_later(self) -> None:
        """Start the loop thread on the first ``start()`` or ``call_soon`` (whatever
        needs the loop first), not now: a client connection defers it until its first
        request is on its way, so the thread's start-up (a hand-over between threads)
        overlaps the server's work instead of delaying the request."""
        self._deferred = True

    def start_deferred(self) -> None:
        """``start()`` if ``start_later()`` left the thread for later; else nothing (a
        cheap check, for every call)."""
        if self._deferred:
            self.start()

    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def call_soon(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on the loop thread; False if the loop has stopped."""
        with self._lock:
            if self._closed:
                return False
            self._pending.append(fn)
            if self._woken:
                return True
            self._woken = True
            self._wake.wake()  # under the lock: never after _shutdown closed it
        if self._deferred:  # an unlocked peek: start() looks again under the lock
            self.start()
        return True

    # -- loop thread only ----------------------------------------------------------

    def register(self, handler: Readiness, write: bool = False) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        self._selector.register(handler.sock, events, handler)

    def set_write_interest(self, handler: Readiness, write: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        try:
            self._selector.modify(handler.sock, events, handler)
        except (KeyError, ValueError, OSError):  # closed meanwhile
            pass

    def unregister(self, handler: Readiness) -> None:
        try:
            self._selector.unregister(handler.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _run(self) -> None:
        select = self._selector.select
        while True:
            alarm = self._alarm
            timeout = None
            if alarm is not None:
                timeout = alarm[0] - time.monotonic()
                if timeout <= 0:
                    self._alarm = None
                    try:
                        alarm[1]()
                    except Exception:
                        log.exception("I/O loop alarm %r failed", alarm[1])
                    continue
            for key, mask in select(timeout):
                handler = key.data
                if handler is None:
                    if not self._run_pending():
                        self._shutdown()
                        return
                    continue
                try:
                    handler.on_ready(bool(mask & selectors.EVENT_READ),
                                     bool(mask & selectors.EVENT_WRITE))
                except Exception:  # a bug of ours: log it, keep serving the others
                    log.exception("I/O handler %r failed", handler)

    def _run_pending(self) -> bool:
        self._wake.drain()
        with self._lock:
            pending, self._pending = self._pending, collections.deque()
            self._woken = False
            closed = self._closed
        for fn in pending:
            try:
                fn()
            except Exception:
                log.exception("I/O loop callback %r failed", fn)
        if not closed and pending:
            # Stopped by one of them (a client connection closing): done now, unless
            # more came meanwhile, instead of one more select for the stop's wake-up.
            with self._lock:
                closed = self._closed and not self._pending
        return not closed

    def _shutdown(self) -> None:
        self._selector.close()
        with self._lock:
            self._wake.close()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the loop thread to end (after ``stop``); not from the loop itself."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def stop(self, join: bool = True) -> None:
        """Stop after running what is pending; the handlers' sockets are the owners' to
        close."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.wake()
        thread = self._thread
        if thread is None:
            self._shutdown()
        elif join and thread is not threading.current_thread():
            thread.join(5.0)
