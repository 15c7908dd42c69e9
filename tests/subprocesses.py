"""Helpers for tests that run a program as a subprocess and signal it."""

from __future__ import annotations

import signal


def ctrl_c_works() -> None:
    """``preexec_fn``: give the child the default SIGINT. A shell without job control
    (CI's, running a job in the background) starts it ignored, and Python then never
    raises KeyboardInterrupt, so a test sending Ctrl-C would wait forever."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
