"""The ``dubbo`` command line (``python -m dubbo``): ``list``, ``describe``, ``call``,
``health`` and ``serve``; see docs/cli.md."""

from .main import main

__all__ = ["main"]
