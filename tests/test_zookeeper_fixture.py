"""The ZooKeeper test fixtures (tests/zk.py, conftest.py) against a real server, and
apache-dubbo 3.0.0b1's provider and consumer meeting through it: the harness the
registry tests stand on."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
from urllib.parse import quote

import pytest

WAIT = 10.0  # seconds any one expected ZooKeeper event may take


def _wait_for(predicate, timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(0.02)


def _pids_running(marker: str) -> list[int]:
    """PIDs of live processes whose command line mentions ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry))
    return found


def test_each_test_starts_from_an_empty_tree_and_wipe_empties_it(zookeeper):
    client = zookeeper.client()
    assert client.get_children("/") == ["zookeeper"]
    client.create("/dubbo/org.example.Svc/providers/p1", b"", makepath=True)
    client.create("/other", b"x")
    zookeeper.wipe()
    assert client.get_children("/") == ["zookeeper"]


def test_an_ephemeral_node_lives_exactly_as_long_as_its_session(zookeeper):
    provider, consumer = zookeeper.client(), zookeeper.client()
    path = "/dubbo/org.example.Svc/providers/tri%3A%2F%2F127.0.0.1%3A1"
    provider.create(path, b"127.0.0.1:1", ephemeral=True, makepath=True)
    data, stat = consumer.get(path)
    assert data == b"127.0.0.1:1"
    assert stat.ephemeralOwner == provider.client_id[0]
    # the folders above it were made persistent
    assert consumer.get("/dubbo/org.example.Svc/providers")[1].ephemeralOwner == 0

    provider.stop()  # a clean close ends the session at once
    _wait_for(lambda: consumer.exists(path) is None, what="ephemeral node removed")


def test_a_children_watch_sees_providers_come_and_go_in_order(zookeeper):
    writer, watcher = zookeeper.client(), zookeeper.client()
    folder = "/dubbo/org.example.Svc/providers"
    watcher.ensure_path(folder)  # a ChildrenWatch on a missing folder gives up silently
    seen: queue.Queue[list[str]] = queue.Queue()
    watcher.ChildrenWatch(folder, lambda children: seen.put(sorted(children)))
    assert seen.get(timeout=WAIT) == []

    writer.create(folder + "/a", ephemeral=True)
    assert seen.get(timeout=WAIT) == ["a"]
    writer.create(folder + "/b", ephemeral=True)
    assert seen.get(timeout=WAIT) == ["a", "b"]
    writer.delete(folder + "/a")
    assert seen.get(timeout=WAIT) == ["b"]


def test_restart_keeps_port_nodes_and_sessions(own_zookeeper):
    server = own_zookeeper.server
    address, first_pid = server.address, server.pid
    client = own_zookeeper.client(timeout=10.0)
    states: list[str] = []
    client.add_listener(lambda state: states.append(str(state)))
    client.create("/dubbo/persistent", b"kept", makepath=True)
    client.create("/dubbo/ephemeral", b"mine", ephemeral=True)
    session = client.client_id

    server.restart(down_seconds=1.0)

    assert server.address == address
    assert server.pid != first_pid
    _wait_for(lambda: client.connected, what="kazoo reconnected")
    assert client.get("/dubbo/persistent")[0] == b"kept"
    # down for less than the session timeout: the session and its ephemeral node survive
    assert client.client_id == session
    assert client.get("/dubbo/ephemeral")[0] == b"mine"
    assert states == ["SUSPENDED", "CONNECTED"]


def test_stop_ends_its_java_process_by_pid_and_frees_the_port(own_zookeeper):
    server = own_zookeeper.server
    pid, directory = server.pid, server.directory
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"org.apache.zookeeper.server.ZooKeeperServerMain" in f.read()
    assert _pids_running(directory) == [pid]
    assert "Mode: standalone" in server.srvr()

    server.stop()

    assert not server.is_running() and server.pid is None
    assert _pids_running(directory) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_kill_is_a_crash_that_restart_recovers_from(own_zookeeper):
    server = own_zookeeper.server
    client = own_zookeeper.client()
    client.create("/dubbo/x", b"1", makepath=True)
    pid = server.pid
    server.kill()
    assert _pids_running(server.directory) == []
    assert pid not in _pids_running("ZooKeeperServerMain")
    server.start()
    _wait_for(lambda: client.connected, what="kazoo reconnected")
    assert client.get("/dubbo/x")[0] == b"1"


def test_apache_dubbo_provider_and_consumer_meet_through_zookeeper(zookeeper, apache_dubbo_python):
    """Their provider registers `quote("tri://HOST:PORT?service=NAME", safe="")` with
    data "HOST:PORT" (PROTOCOL.md §11) and their consumer finds and calls it."""
    from apache_dubbo import CONSUMER, PROVIDER, SERVICE

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    provider = subprocess.Popen(
        [apache_dubbo_python, "-I", PROVIDER, zookeeper.address],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        ready: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: ready.put(provider.stdout.readline()), daemon=True).start()
        line = ready.get(timeout=30).decode()
        assert line.startswith("READY "), line
        port = int(line.split()[1])

        client = zookeeper.client()
        folder = f"/dubbo/{SERVICE}/providers"
        node = quote(f"tri://127.0.0.1:{port}?service={SERVICE}", safe="")
        assert client.get_children(folder) == [node]
        data, stat = client.get(f"{folder}/{node}")
        assert data == f"127.0.0.1:{port}".encode() and stat.ephemeralOwner != 0
        assert client.get_children(f"/dubbo/{SERVICE}") == ["providers"]

        done = subprocess.run(
            [apache_dubbo_python, "-I", CONSUMER, zookeeper.address, "3", "zk"],
            capture_output=True, timeout=90, env=env)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        assert json.loads(done.stdout) == ["hello, zk"] * 3
        # its consumer registers nothing under consumers/
        assert client.get_children(f"/dubbo/{SERVICE}") == ["providers"]

        provider.stdin.close()  # the script then closes its ZooKeeper session
        assert provider.wait(20) == 0
        _wait_for(lambda: client.get_children(folder) == [], what="provider node removed")
    finally:
        if provider.poll() is None:
            provider.kill()
            provider.wait(10)
        provider.stdout.close()
