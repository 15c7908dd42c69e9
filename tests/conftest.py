from __future__ import annotations

import gc
import os
import socket
import sys
import threading
import time

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)

# The package under test (repo root), the generated greeter_pb2 (samples/proto) and the
# test helpers (tests/peers.py, imported as `peers`).
for _path in (os.path.join(REPO_ROOT, "samples", "proto"), TESTS_DIR, REPO_ROOT):
    if _path not in sys.path:
        sys.path.insert(0, _path)

DEFAULT_TIMEOUT = 60  # seconds per test, unless a marker, --timeout or the ini says otherwise
THREAD_SETTLE_SECONDS = 5.0


def pytest_collection_modifyitems(config, items):
    configured = config.getoption("timeout", None) is not None
    try:
        configured = configured or bool(config.getini("timeout"))
    except ValueError:  # pytest-timeout not installed: nothing to configure
        return
    if configured:
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


def _dubbo_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("dubbo") and t.is_alive()}


def _open_sockets() -> set[int]:
    """ids of the Python socket objects that are still open (dubbo's and the tests'
    own; grpcio's sockets live in its C core and are not seen here)."""
    return {id(o) for o in gc.get_objects()
            if isinstance(o, socket.socket) and o.fileno() != -1}


@pytest.fixture(autouse=True)
def no_leaked_dubbo_threads():
    """Every thread dubbo starts (all named "dubbo...") must be gone, and every socket
    opened during the test closed, once the test's servers and clients are closed.
    Autouse fixtures are set up first, so this teardown runs after theirs."""
    before = _dubbo_threads()
    sockets_before = _open_sockets()
    yield
    deadline = time.monotonic() + THREAD_SETTLE_SECONDS
    leaked = _dubbo_threads() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _dubbo_threads() - before
    if leaked:
        names = sorted(t.name for t in leaked)
        pytest.fail(
            f"{len(leaked)} dubbo thread(s) still alive {THREAD_SETTLE_SECONDS:.0f} s "
            f"after the test's servers and clients were closed: {names}",
            pytrace=False,
        )
    open_sockets = _open_sockets() - sockets_before
    while open_sockets and time.monotonic() < deadline:
        time.sleep(0.05)
        open_sockets = _open_sockets() - sockets_before
    if open_sockets:
        found = [o for o in gc.get_objects() if id(o) in open_sockets]
        pytest.fail(f"{len(open_sockets)} socket(s) left open after the test: {found}",
                    pytrace=False)


@pytest.fixture
def serve_dubbo():
    """``serve_dubbo(service_name, *method_handlers)`` starts a dubbo server on a free
    loopback port; every server started is stopped at teardown."""
    import dubbo
    from dubbo.configs import ServiceConfig
    from dubbo.proxy.handlers import RpcServiceHandler

    servers = []

    def start(service_name, *handlers):
        service = RpcServiceHandler(service_name, list(handlers))
        server = dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace=1)


# -- a real ZooKeeper, and PyPI's apache-dubbo as a peer (registry tests) -----------------
#
# Without ZooKeeper, kazoo or the apache-dubbo virtualenv these fixtures skip, saying
# what is missing; on CI (CI=true) they fail instead, so a broken CI image cannot turn
# the registry tests into silent skips.


def _on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _require(missing: str | None) -> None:
    if missing is None:
        return
    if _on_ci():
        pytest.fail(f"{missing} (CI is set: this is required there, not skipped)", pytrace=False)
    pytest.skip(missing)


def _kazoo_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("kazoo") is None:
        return "kazoo is not installed: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="session")
def zookeeper_server():
    """One ZooKeeper server (tests/zk.py ZooKeeperServer) for the whole run: starting a
    JVM costs about a second. Tests must not stop it; use ``own_zookeeper`` for that."""
    from zk import ZooKeeperServer, zookeeper_missing

    _require(zookeeper_missing())
    server = ZooKeeperServer().start()
    yield server
    server.close()


@pytest.fixture
def zookeeper(zookeeper_server):
    """The shared ZooKeeper, emptied before and after the test (only ``/zookeeper``
    stays), as a ``zk.ZooKeeperFixture``: ``.address`` ("127.0.0.1:PORT"), ``.url``
    ("zookeeper://127.0.0.1:PORT"), ``.client()`` (a started kazoo client, closed at
    teardown) and ``.server``."""
    from zk import ZooKeeperFixture

    _require(_kazoo_missing())
    if not zookeeper_server.is_running():  # a test stopped the shared one: bring it back
        zookeeper_server.start()
    handle = ZooKeeperFixture(zookeeper_server)
    handle.wipe()
    yield handle
    handle.close()
    handle.wipe()


@pytest.fixture
def own_zookeeper():
    """A ZooKeeper server of the test's own (a ``zk.ZooKeeperFixture``), for tests that
    stop, kill or restart it (``.server.restart(down_seconds=10)``); deleted at teardown."""
    from zk import ZooKeeperFixture, ZooKeeperServer, zookeeper_missing

    _require(zookeeper_missing())
    _require(_kazoo_missing())
    server = ZooKeeperServer().start()
    handle = ZooKeeperFixture(server)
    yield handle
    handle.close()
    server.close()


@pytest.fixture(scope="session")
def apache_dubbo_python() -> str:
    """The python of a virtualenv holding PyPI's apache-dubbo 3.0.0b1 and kazoo, built
    once into <repo>/.venv-apache-dubbo (about 10 s). Run its scripts isolated, so our
    `dubbo` cannot shadow theirs: [apache_dubbo_python, "-I", path to
    tests/apache_dubbo/provider.py or consumer.py, ...]."""
    from apache_dubbo.venv import VenvError, ensure_venv

    try:
        return ensure_venv()
    except VenvError as exc:
        _require(f"cannot build the apache-dubbo 3.0.0b1 virtualenv: {exc}")
        raise  # unreachable: _require skipped or failed
