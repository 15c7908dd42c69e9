"""Give freed memory back to the operating system after a burst.

glibc's malloc keeps what a burst of calls freed (per-thread arenas, a heap top pinned
by one live block), so a server that served 3,000 calls with 60 KB of metadata each
stays ~60 MiB larger than it needs to be long after they ended. ``malloc_trim(0)``
returns those free pages; the server calls it from its timer thread a moment after
calls or connections have ended. Elsewhere (musl, macOS, Windows) it does nothing.

Within a run of large calls the opposite is wanted: dubbo.transport.heap lets glibc keep
those calls' buffers in the heap from one call to the next. This trim returns what
``malloc_trim`` can once the calls have ended: free chunks in every arena and the top of
the main heap, not the top of a per-thread arena (glibc shrinks those only in ``free``,
and only above its trim threshold, which a large block raises to up to 64 MiB).

That last part is why a server limits glibc to ``MALLOC_ARENAS`` arenas. By default
glibc gives threads up to 8 per core: 100 workers sending 1 MiB replies (the never-read
window attack of tests/hostile) left 15 arenas with a 5-7 MiB free top each, ~95 MiB
that no trim could return. Python threads allocate under the GIL, so more arenas buy
almost nothing; measured on the benchmark's protobuf rows, one arena is as fast
(docs/security.md).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping

from ..transport.heap import glibc_function

__all__ = ["MALLOC_ARENAS", "limit_malloc_arenas", "release_free_memory"]

# glibc malloc arenas in a serving process, unless the user chose (MALLOC_ARENA_MAX,
# GLIBC_TUNABLES=glibc.malloc.arena_max=N).
MALLOC_ARENAS = 1
_M_ARENA_MAX = -8  # mallopt's parameter, from glibc's malloc.h


# None where the C library is not glibc (musl, macOS, Windows): nothing to do there.
_trim: Callable[[int], int] | None = glibc_function("malloc_trim", ctypes.c_int,
                                                    ctypes.c_size_t)
_mallopt: Callable[[int, int], int] | None = glibc_function("mallopt", ctypes.c_int,
                                                           ctypes.c_int, ctypes.c_int)


def _user_chose_arenas(environ: Mapping[str, str]) -> bool:
    return "MALLOC_ARENA_MAX" in environ or \
        "glibc.malloc.arena_max" in environ.get("GLIBC_TUNABLES", "")


def limit_malloc_arenas(count: int = MALLOC_ARENAS,
                        environ: Mapping[str, str] = os.environ) -> bool:
    """Have threads started from now on share ``count`` glibc arenas, so that what they
    free is in arenas the idle trim can return. False where glibc is absent or the user
    set the arena count (theirs wins). Threads that already have an arena keep it."""
    if _mallopt is None or _user_chose_arenas(environ):
        return False
    return _mallopt(_M_ARENA_MAX, count) == 1


def release_free_memory() -> bool:
    """Return free heap pages to the OS; False where the C library cannot."""
    if _trim is None:
        return False
    _trim(0)
    return True

