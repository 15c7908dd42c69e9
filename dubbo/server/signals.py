"""SIGTERM stops a server the way Ctrl-C does.

Python's default SIGTERM kills the process at once: in-flight calls are cut and a
registry node stays until its session expires. While a server started on the main
thread runs, and the program has no SIGTERM handler of its own, SIGTERM raises
``SystemExit(143)`` in the main thread instead, as Ctrl-C raises ``KeyboardInterrupt``,
so ``with dubbo.Server(...)`` blocks and ``wait_for_termination()`` stop gracefully.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

_lock = threading.Lock()
_servers: set[int] = set()  # ids of running servers that installed the handler; guarded by _lock


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install(server: Any) -> None:
    """Take SIGTERM for ``server`` if this is the main thread and nobody else has it."""
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        current = signal.getsignal(signal.SIGTERM)
        if current is _on_sigterm:
            _servers.add(id(server))
        elif current == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
            _servers.add(id(server))


def release(server: Any) -> None:
    """Give SIGTERM back its default once the last server that took it has stopped."""
    with _lock:
        if id(server) not in _servers:
            return
        _servers.discard(id(server))
        if _servers or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
