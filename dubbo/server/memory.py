"""Give freed memory back to the operating system after a burst.

glibc's malloc keeps what a burst of calls freed (per-thread arenas, a heap top pinned
by one live block), so a server that served 3,000 calls with 60 KB of metadata each
stays ~60 MiB larger than it needs to be long after they ended. ``malloc_trim(0)``
returns those free pages; the server calls it from its timer thread a moment after
calls or connections have ended. Elsewhere (musl, macOS, Windows) it does nothing.

Within a run of large calls the opposite is wanted: dubbo.transport.heap lets glibc keep
those calls' buffers in the heap from one call to the next. This trim returns what
``malloc_trim`` can once the calls have ended: free chunks in every arena and the top of
the main heap (not the top of a per-thread arena, which glibc only shrinks in ``free``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["release_free_memory"]


def _find_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    typed: Callable[[int], int] = trim  # as argtypes/restype above declare
    return typed


_trim = _find_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the OS; False where the C library cannot."""
    if _trim is None:
        return False
    _trim(0)
    return True

