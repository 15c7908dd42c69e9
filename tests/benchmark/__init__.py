"""Performance benchmark: dubbo against grpcio (sync) and grpclib (asyncio).

Run it from the repository root with ``python -m tests.benchmark`` (``--help`` for the
options) or ``tox -e bench``; docs/performance.md describes what it measures. ``tests``
has no ``__init__.py``, so it is imported as a namespace package and this one as
``tests.benchmark``.
"""
