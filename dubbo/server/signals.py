"""A program's end stops its servers gracefully: Ctrl-C, SIGTERM, or falling off the end.

Python's default SIGTERM kills the process at once: in-flight calls are cut and a
registry node stays until its session expires. While a server started on the main
thread runs, and the program has no SIGTERM handler of its own, SIGTERM raises
``SystemExit(143)`` in the main thread instead, as Ctrl-C raises ``KeyboardInterrupt``,
so ``with dubbo.Server(...)`` blocks and ``wait_for_termination()`` stop gracefully.
A server still running when the interpreter exits (``start(); input(); stop()``
interrupted in ``input()``) is stopped by an ``atexit`` handler, with the default grace.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
import weakref
from types import FrameType
from typing import Any

log = logging.getLogger("dubbo.server")
_lock = threading.Lock()
# Started and not stopped (guarded by _lock); SIGTERM is ours while it is not empty.
_running: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _stop_running_servers() -> None:
    with _lock:
        servers = list(_running)
    for server in servers:
        try:
            server.stop()
        except Exception:  # the process is ending: log, and stop the others
            log.exception("stopping %r at exit failed", server)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install(server: Any) -> None:
    """Stop ``server`` at exit; take SIGTERM if this is the main thread and nobody has it."""
    with _lock:
        _running.add(server)
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)


def release(server: Any) -> None:
    """Give SIGTERM back its default once the last running server has stopped."""
    with _lock:
        _running.discard(server)
        if not _running and threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
