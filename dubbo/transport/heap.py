"""Keep a run of large messages' buffers in glibc's heap instead of faulting them in
again on every call.

A 4 MiB protobuf echo allocates ~16 MiB on the thread that parses and serializes it
(protobuf's parsed copy, its 8 MiB encoder buffer, the serialized bytes) and frees it
when the call ends. glibc's own thresholds, raised by that 8 MiB buffer to "mmap above
8 MiB, trim a free heap top above 16 MiB", put those 16 MiB just at the trim line: on
some calls (which ones depends on the heap's layout, so it changes from run to run and
with unrelated code) glibc hands them back to the OS and the next call faults ~4,000
zero-filled pages in again. Measured on the 4 MiB echo: 94 to 3,100 page faults per echo
from one server run to the next, 2,000 in some client runs, 2 to 6 ms of CPU per echo
(issue 11).

``keep_heap_for`` moves glibc's thresholds the way glibc itself does, once per size: it
is told every message of ``HEAP_HINT_MIN`` (64 KiB) or more that is received (``Inbox``)
and, on a server, every reply of that size it serializes (a download: server CPU per
4 MiB reply 10.7 -> 3.6 ms). What glibc then keeps is bounded: a free heap top of at
most ``2 * HEAP_HINT_MAX`` (32 MiB) per malloc arena, where glibc's own thresholds allow
up to 64 MiB after a 32 MiB message. A server keeps its threads in one arena and its
idle trim returns that arena's free top once calls have ended (dubbo/server/memory.py);
with per-thread arenas the trim could not (``malloc_trim`` leaves their tops), which is
why the send side was once withdrawn: ~100 workers sending 1 MiB replies (the
never-read window attack in tests/hostile) left an 8 MiB top in each. The client has
no idle trim, so it hints only what it receives.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["keep_heap_for", "glibc_function", "HEAP_HINT_MIN", "HEAP_HINT_MAX"]

# Smaller messages change nothing: their buffers stay below glibc's initial thresholds
# (mmap from 128 KiB, trim above 128 KiB). Larger ones meet the same trim line at every
# size (a 512 KiB echo: 1 MiB encoder buffer, 2 MiB freed per call, trimmed above 2 MiB).
HEAP_HINT_MIN = 64 * 1024
# The largest block primed: glibc then maps blocks above it and trims a free heap top
# above twice it. 4x a 4 MiB message: its calls' ~16 MiB stay well below the trim line.
HEAP_HINT_MAX = 16 * 1024 * 1024


_Malloc = tuple[Callable[[int], int | None], Callable[[int], None]]


def glibc_function(name: str, restype: Any, *argtypes: Any) -> Any:
    """glibc's function ``name`` with its C signature, or None where the C library is
    not glibc. Looked up in the symbols already loaded (no ``find_library``, which runs
    ldconfig)."""
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):
            return None
        function = getattr(libc, name)
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = restype
    return function


def _find_malloc() -> _Malloc | None:
    """glibc's malloc and free (None elsewhere: other allocators have no such threshold)."""
    malloc = glibc_function("malloc", ctypes.c_void_p, ctypes.c_size_t)
    free = glibc_function("free", None, ctypes.c_void_p)
    return None if malloc is None or free is None else (malloc, free)


# glibc's malloc and free, looked up (under _lock) when the first large message comes.
_malloc_free: _Malloc | None = None
_looked_up = False
_primed = 0  # the largest block primed so far; only grows, written under _lock
_lock = threading.Lock()


def keep_heap_for(message_size: int) -> int:
    """Let glibc keep in its heap what calls carrying ``message_size`` bytes free.

    glibc raises its thresholds by itself whenever a block it had mapped on its own is
    freed (mmap only above that block's size, trim a free heap top only above twice it;
    up to 32 and 64 MiB): that is its whole policy, and the only one used here. Freeing
    one untouched block of four times the message, rounded up to a power of two
    (``HEAP_HINT_MAX`` at most), puts the thresholds where such calls' buffers stay in
    the heap (an mmap and a munmap, at most once per power of two). When a user set
    glibc's thresholds (``mallopt``, ``GLIBC_TUNABLES``, ``MALLOC_*_``) glibc no longer
    moves them, and this changes nothing. Returns the size primed, 0 if none.
    """
    global _primed, _malloc_free, _looked_up
    if message_size < HEAP_HINT_MIN:
        return 0
    size = min(1 << (4 * message_size - 1).bit_length(), HEAP_HINT_MAX)
    if size <= _primed or (_looked_up and _malloc_free is None):
        return 0  # the common case, unlocked: a stale read only means taking the lock
    with _lock:
        if not _looked_up:
            _malloc_free, _looked_up = _find_malloc(), True
        if _malloc_free is None or size <= _primed:
            return 0
        malloc, free = _malloc_free
        _primed = size
        block = malloc(size)  # above glibc's mmap threshold: mapped, never touched
        if block:
            free(block)
    return size
