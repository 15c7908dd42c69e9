"""``dubbo.Server(config, processes=N)``: N processes serve one port. Each handler
reports ``os.getpid()``, so a test sees which process answered each connection."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from subprocesses import ctrl_c_works

import dubbo
from dubbo.configs import ReferenceConfig, RegistryConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.services import health as dubbo_health
from dubbo.services.health import HealthServicer, ServingStatus
from dubbo.status import RpcError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE = "test.Processes"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc to find child processes")


def _service() -> RpcServiceHandler:
    def pid(request: bytes) -> bytes:
        return str(os.getpid()).encode()

    def slow(request: bytes, context: object) -> bytes:
        """Works the seconds asked (stopping if the call is cancelled), says who did."""
        deadline = time.monotonic() + float(request)
        while time.monotonic() < deadline and context.is_active():  # type: ignore
            time.sleep(0.02)
        return b"done by " + str(os.getpid()).encode()

    return RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(pid, "Pid"),
                                       RpcMethodHandler.unary(slow, "Slow")])


def _server(processes: int = 2) -> dubbo.Server:
    return dubbo.Server(ServiceConfig(_service(), host="127.0.0.1", port=0),
                        processes=processes)


def _client(port: int, service: str = SERVICE) -> dubbo.Client:
    return dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{service}"))


def _pid_of(client: dubbo.Client) -> int:
    return int(client.unary("Pid")(b"", timeout=5))


def _alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by whoever adopted it, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _client_on(port: int, want: Callable[[int], bool], tries: int = 40) -> dubbo.Client:
    """A client whose connection reached a process ``want`` accepts (the kernel picks
    one per connection)."""
    for _ in range(tries):
        client = _client(port)
        if want(_pid_of(client)):
            return client
        client.close()
    raise AssertionError("no connection reached the process wanted")


@pytest.fixture
def others() -> set[int]:
    """Child processes of the test run from elsewhere (a session's ZooKeeper, ...)."""
    return _children_of(os.getpid())


@pytest.fixture
def server(others: set[int]) -> Iterator[dubbo.Server]:
    server = _server().start()
    yield server
    server.stop(grace=1)


def test_connections_spread_over_the_processes(server: dubbo.Server,
                                               others: set[int]) -> None:
    assert len(server.pids) == 2 and server.pids[0] == os.getpid()
    assert _children_of(os.getpid()) - others == {server.pids[1]}
    seen = set()
    for _ in range(20):  # each connection lands on one of 2 sockets: all 20 on one is 2**-19
        with _client(server.port) as client:
            seen.add(_pid_of(client))
    assert seen == set(server.pids)


def test_stop_lets_in_flight_calls_finish_in_every_process_and_leaves_no_child(
        others: set[int]) -> None:
    server = _server().start()
    child = server.pids[1]
    clients = [_client_on(server.port, lambda pid: pid == child),
               _client_on(server.port, lambda pid: pid == os.getpid())]
    results: list[bytes | BaseException] = []

    def call(client: dubbo.Client) -> None:
        try:
            results.append(client.unary("Slow")(b"0.6", timeout=10))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # both calls are running
    started = time.monotonic()
    server.stop(grace=5)
    took = time.monotonic() - started
    for thread in threads:
        thread.join(10)
    for client in clients:
        client.close()
    assert sorted(results) == sorted([f"done by {child}".encode(),
                                      f"done by {os.getpid()}".encode()])
    assert took < 3  # it waited for the calls, not for the whole grace
    assert not _alive(child) and _children_of(os.getpid()) == others


def test_stop_cancels_after_the_grace_in_the_other_processes_too() -> None:
    server = _server().start()
    child = server.pids[1]
    client = _client_on(server.port, lambda pid: pid == child)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.unary("Slow")(b"5", timeout=10)
        except RpcError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop(grace=0.3)
    thread.join(10)
    client.close()
    assert time.monotonic() - started < 3
    assert len(errors) == 1 and errors[0].code.name in ("CANCELLED", "UNAVAILABLE")
    assert not _alive(child)


_PROGRAM = textwrap.dedent("""
    import os, sys, time
    import dubbo
    from dubbo.configs import ServiceConfig
    from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

    def pid(request):
        return str(os.getpid()).encode()

    service = RpcServiceHandler("test.Processes", [RpcMethodHandler.unary(pid, "Pid")])
    server = dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0), processes=3)
    server.start()
    print(server.port, *server.pids, flush=True)
    print("returned", server.wait_for_termination(), flush=True)
""")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 0),
                                       (signal.SIGKILL, -9)])
def test_signals_to_the_parent_leave_no_child(sig: signal.Signals, code: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _PROGRAM], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": REPO},
                            preexec_fn=ctrl_c_works)
    try:
        port, parent, *children = map(int, proc.stdout.readline().split())  # type: ignore
        assert parent == proc.pid and len(children) == 2
        with _client(port) as client:
            assert _pid_of(client) in (parent, *children)
        os.kill(proc.pid, sig)
        assert proc.wait(15) == code
        # SIGKILL: the children see their pipe close (and get PDEATHSIG) and stop
        assert _wait_until(lambda: not any(map(_alive, children))), children
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore


def test_a_killed_child_is_logged_and_the_others_serve_on(
        server: dubbo.Server, caplog: pytest.LogCaptureFixture) -> None:
    child = server.pids[1]
    stale = _client_on(server.port, lambda pid: pid == child)
    with caplog.at_level(logging.ERROR, logger="dubbo.server"):
        os.kill(child, signal.SIGKILL)
        assert _wait_until(lambda: server.pids == [os.getpid()])
    assert f"serving process {child} was killed by SIGKILL" in caplog.text
    assert "not restarted; 1 process serves on" in caplog.text
    # the client whose connection died with it reconnects, to the survivor
    assert _pid_of(stale) == os.getpid()
    stale.close()
    for _ in range(5):  # and every new connection is served, by the survivor
        with _client(server.port) as client:
            assert _pid_of(client) == os.getpid()


def test_health_set_in_the_parent_is_seen_through_every_connection(
        server: dubbo.Server) -> None:
    server.health.set(SERVICE, "NOT_SERVING")
    server.health.set("extra", ServingStatus.SERVING)
    server.health.clear("extra")
    seen = set()
    for _ in range(12):
        with _client(server.port) as pids, _client(server.port, dubbo_health.SERVICE_NAME) \
                as probe:
            # the two connections need not reach the same process: check each pid's view
            seen.add(_pid_of(pids))
            assert dubbo_health.check(probe, SERVICE) is ServingStatus.NOT_SERVING
            assert dubbo_health.check(probe, "") is ServingStatus.SERVING
            with pytest.raises(RpcError) as info:
                dubbo_health.check(probe, "extra")
            assert info.value.code.name == "NOT_FOUND"
    assert seen == set(server.pids)


def test_processes_1_forks_nothing(others: set[int]) -> None:
    with _server(processes=1) as server:
        assert server.pids == [os.getpid()]
        assert type(server.health) is HealthServicer
        assert _children_of(os.getpid()) == others
        with _client(server.port) as client:
            assert _pid_of(client) == os.getpid()


def test_bad_process_counts_fail_at_construction() -> None:
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError):
            _server(processes=bad)  # type: ignore[arg-type]


def test_the_registry_gets_the_port_once(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[tuple[int, int]] = []

    class Registry:
        def register(self, url: Any) -> str:
            registered.append((os.getpid(), url.port))
            return f"/node/{len(registered)}"

        def unregister(self, path: str) -> None:
            pass

    app = dubbo.Dubbo(registry_config=RegistryConfig.from_url("zookeeper://127.0.0.1:1"))
    monkeypatch.setattr(app, "_acquire_registry", lambda: Registry())
    monkeypatch.setattr(app, "_release_registry", lambda registry: None)
    server = app.create_server(ServiceConfig(_service(), host="127.0.0.1", port=0),
                               unregister_delay=0, processes=2)
    with server:
        assert len(server.pids) == 2
        assert registered == [(os.getpid(), server.port)]  # once, by this process
