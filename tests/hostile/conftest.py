"""Fixtures for the hostile-peer tests: a server in a subprocess (killed by PID at
teardown) and an attacker whose sockets are all closed at teardown."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .harness import Attacker, ServerProcess

if not os.path.exists(f"/proc/{os.getpid()}/status"):  # pragma: no cover
    pytest.skip("the hostile tests read /proc/<pid>/status (Linux)", allow_module_level=True)


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(**options)``: serve.py with ``dubbo.Server(..., **options)``,
    warmed up by one call, so that its baseline memory is that of a server in use."""
    servers: list[ServerProcess] = []

    def start(**options: Any) -> ServerProcess:
        server = ServerProcess(options)
        servers.append(server)
        server.call("Echo", b"warm-up")
        return server

    yield start
    for server in servers:
        server.stop()
        server.remove_log()


@pytest.fixture
def attacker_for() -> Iterator[Callable[[ServerProcess], Attacker]]:
    """``attacker_for(server)``: an :class:`Attacker` closed at teardown."""
    attackers: list[Attacker] = []

    def make(server: ServerProcess) -> Attacker:
        attacker = Attacker(server.port)
        attackers.append(attacker)
        return attacker

    yield make
    for attacker in attackers:
        attacker.close_all()
