"""A real ZooKeeper for the tests: a standalone server in its own JVM.

``ZooKeeperServer`` starts ``org.apache.zookeeper.server.ZooKeeperServerMain`` from
Debian's ``zookeeper`` package (``.ci/run`` installs it) on a free 127.0.0.1 port
with a temporary data dir, no admin HTTP server and a 128 MiB heap, and stops it by
PID. ``restart()`` keeps the port and the data dir, so persistent nodes and open
sessions survive it as they do when a real ensemble restarts.

Elsewhere (a ZooKeeper tarball, another distribution) set
``DUBBO_ZOOKEEPER_CLASSPATH`` to the server's classpath (e.g. ``/opt/zookeeper/lib/*``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

DEBIAN_JAR_DIR = "/usr/share/java"
# zookeeper.jar's manifest (Debian) lists its own dependencies but for netty-codec
# (which the Netty connection factory below needs); the last two add a log binding.
# "/usr/share/java/*" would work too, but puts 500 jars and six SLF4J bindings on the
# classpath, and the one SLF4J picks (NOP) writes no log at all.
DEBIAN_JARS = ("zookeeper.jar", "netty-codec.jar", "slf4j-log4j12.jar", "log4j-1.2.jar")
MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"
INSTALL_HINT = ("install Debian's zookeeper package "
                "(apt-get install --no-install-recommends zookeeper; .ci/run does) "
                "or set DUBBO_ZOOKEEPER_CLASSPATH to a ZooKeeper server's classpath")

LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] %m%n
"""


class ZooKeeperNotInstalled(RuntimeError):
    """No java or no ZooKeeper server jars on this machine."""


class ZooKeeperStartError(RuntimeError):
    """The server process exited or did not answer in time; the message holds its log."""


def find_zookeeper() -> tuple[str, str]:
    """(java, classpath) of the ZooKeeper server, or ZooKeeperNotInstalled saying why."""
    java_home = os.environ.get("JAVA_HOME")
    wanted = os.path.join(java_home, "bin", "java") if java_home else "java"
    java = shutil.which(wanted)
    if java is None:
        where = f"{wanted} (from JAVA_HOME) does not exist" if java_home else "not on PATH"
        raise ZooKeeperNotInstalled(f"ZooKeeper needs java, {where}: {INSTALL_HINT}")
    classpath = os.environ.get("DUBBO_ZOOKEEPER_CLASSPATH")
    if classpath:
        return java, classpath
    jars = [os.path.join(DEBIAN_JAR_DIR, jar) for jar in DEBIAN_JARS]
    if not os.path.isfile(jars[0]):
        raise ZooKeeperNotInstalled(f"ZooKeeper is not installed ({jars[0]} is missing): "
                                    f"{INSTALL_HINT}")
    return java, ":".join(jar for jar in jars if os.path.isfile(jar))


def zookeeper_missing() -> str | None:
    """Why no ZooKeeper server can be started here, or None when one can."""
    try:
        find_zookeeper()
    except ZooKeeperNotInstalled as exc:
        return str(exc)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four_letter_word(address: tuple[str, int], word: str, timeout: float = 2.0) -> str:
    """Send a four-letter command (only ``srvr`` and ``ruok`` are enabled) and return
    the answer; raises OSError when nothing listens."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(word.encode("ascii"))
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")


_live_servers: set[ZooKeeperServer] = set()  # guarded by _live_lock
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    """Never leave a JVM behind, even when a test run ends without its teardown."""
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        server.close()


class ZooKeeperServer:
    """One standalone ZooKeeper server process, started and stopped by the tests.

    tick_time_ms sets ZooKeeper's clock: sessions can last from 2 ticks up to
    max_session_timeout_ms, and expire within about a tick of their timeout.
    """

    def __init__(self, tick_time_ms: int = 500, max_session_timeout_ms: int = 60_000,
                 start_timeout: float = 30.0) -> None:
        self.java, self.classpath = find_zookeeper()
        self.tick_time_ms = tick_time_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.directory: str | None = None  # config, data dir and log; removed by close()
        self.starts = 0
        # guards _process and _log_file (start/stop may come from a test's threads)
        self._lock = threading.RLock()
        self._process: subprocess.Popen | None = None
        self._log_file = None

    # -- where it is -------------------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as kazoo's ``hosts=`` takes it."""
        if self.port is None:
            raise RuntimeError("ZooKeeperServer was never started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``zookeeper://127.0.0.1:PORT``, as RegistryConfig.from_url takes it."""
        return f"zookeeper://{self.address}"

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._process is None else self._process.pid

    @property
    def data_dir(self) -> str:
        return os.path.join(self._dir(), "data")

    @property
    def log_path(self) -> str:
        return os.path.join(self._dir(), "zookeeper.log")

    def is_running(self) -> bool:
        with self._lock:
            return self._process is not None and self._process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""

    def srvr(self) -> str:
        """The ``srvr`` four-letter answer (version, mode, connections, node count)."""
        return four_letter_word(("127.0.0.1", self.port), "srvr")

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> ZooKeeperServer:
        """Start the JVM and return once it serves clients (bounded by start_timeout).

        The first start picks a free port, retrying with another if a different
        process takes it first; later starts (restart) reuse the port and data dir.
        """
        with self._lock:
            if self.is_running():
                return self
            if self.directory is None:
                self.directory = tempfile.mkdtemp(prefix="dubbo-zookeeper-")
                os.makedirs(self.data_dir)
            fixed_port = self.port is not None
            for attempt in range(3):
                if not fixed_port:
                    self.port = free_port()
                try:
                    self._launch_and_wait()
                    self.starts += 1
                    return self
                except ZooKeeperStartError:
                    port_taken = "Address already in use" in self.log_tail()
                    if fixed_port or attempt == 2 or not port_taken:
                        if self.starts == 0:  # nothing to keep; the error holds the log
                            shutil.rmtree(self.directory, ignore_errors=True)
                            self.directory = None
                        raise
            raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the JVM by its PID, SIGKILL it after ``timeout`` s, and reap it."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL at once: a crash, with no chance to close client connections."""
        self._end(signal.SIGKILL, 0.0)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop, stay down ``down_seconds``, start again on the same port and data dir."""
        self.stop()
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        """Stop the server and delete its directory (config, data and log)."""
        self.stop()
        with self._lock:
            directory, self.directory = self.directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> ZooKeeperServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------

    def _dir(self) -> str:
        if self.directory is None:
            raise RuntimeError("ZooKeeperServer was never started (or was closed)")
        return self.directory

    def _write_config(self) -> str:
        config = os.path.join(self._dir(), "zoo.cfg")
        with open(config, "w", encoding="utf-8") as f:
            f.write("\n".join([
                f"tickTime={self.tick_time_ms}",
                f"dataDir={self.data_dir}",
                f"clientPort={self.port}",
                "clientPortAddress=127.0.0.1",   # loopback only
                "maxClientCnxns=0",              # no per-IP cap: all test clients share one IP
                f"minSessionTimeout={2 * self.tick_time_ms}",
                f"maxSessionTimeout={self.max_session_timeout_ms}",
                "admin.enableServer=false",      # else an HTTP server on port 8080
                "4lw.commands.whitelist=srvr,ruok",
                "forceSync=no",                  # no fsync per write: test data is throwaway
                "",
            ]))
        with open(os.path.join(self._dir(), "log4j.properties"), "w", encoding="utf-8") as f:
            f.write(LOG4J_PROPERTIES)
        return config

    def _launch_and_wait(self) -> None:
        config = self._write_config()
        argv = [
            self.java, "-Xmx128m", "-Xss512k", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",  # C1 only: starts faster, plenty for tests
            "-Dzookeeper.admin.enableServer=false",
            # Netty, not the default NIO factory: ZooKeeper 3.8.0's NIO one, when a client
            # connects between binding the port and loading the data (clients retrying
            # during a restart do), hits a NullPointerException closing the connection
            # and leaves it open and mute, so that client waits out its read timeout and
            # loses its session. Netty closes such a connection at once.
            "-Dzookeeper.serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
            f"-Dlog4j.configuration=file:{os.path.join(self._dir(), 'log4j.properties')}",
            "-cp", self.classpath, MAIN_CLASS, config,
        ]
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"\n=== start {self.starts + 1}: {' '.join(argv)}\n".encode())
        self._log_file.flush()
        self._process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, cwd=self._dir(), close_fds=True)
        with _live_lock:
            _live_servers.add(self)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._reap()
                raise ZooKeeperStartError(
                    f"ZooKeeper exited with {code} while starting on {self.address}; "
                    f"its log ({self.log_path}) ends:\n{self.log_tail()}")
            try:
                # "Mode: standalone" once it serves; before that it answers
                # "This ZooKeeper instance is not currently serving requests".
                if "Mode:" in self.srvr():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self._end(signal.SIGKILL, 0.0)
        raise ZooKeeperStartError(
            f"ZooKeeper did not answer on {self.address} within {self.start_timeout:.0f} s; "
            f"its log ({self.log_path}) ends:\n{self.log_tail()}")

    def _end(self, sig: int, timeout: float) -> None:
        with self._lock:
            process = self._process
            if process is None:
                return
            if process.poll() is None:
                process.send_signal(sig)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
            self._reap()

    def _reap(self) -> None:
        with self._lock:
            self._process = None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
        with _live_lock:
            _live_servers.discard(self)


class ZooKeeperFixture:
    """What the ``zookeeper`` fixtures give a test: the server, its address, and kazoo
    clients that are closed when the test ends.

    ``wipe()`` deletes every node but ``/zookeeper`` (ZooKeeper's own), so each test
    starts from an empty ``/dubbo`` and never sees another test's providers.
    """

    def __init__(self, server: ZooKeeperServer) -> None:
        self.server = server
        self._clients: list = []  # the test's kazoo clients; only the test's thread adds

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, timeout: float = 10.0, **kwargs: object):
        """A started ``kazoo.client.KazooClient`` on this server, stopped and closed at
        teardown. ``timeout`` is its session timeout; kwargs go to KazooClient."""
        from kazoo.client import KazooClient

        client = KazooClient(hosts=self.address, timeout=timeout, **kwargs)
        self._clients.append(client)
        client.start(timeout=10)
        return client

    def wipe(self) -> None:
        """Delete every node but /zookeeper. Nodes a live session re-creates meanwhile
        make a delete fail with NotEmptyError; it is retried a few times."""
        from kazoo.client import KazooClient
        from kazoo.exceptions import NoNodeError, NotEmptyError

        client = KazooClient(hosts=self.address, timeout=10.0)
        try:
            client.start(timeout=10)
            for attempt in range(5):
                try:
                    for child in client.get_children("/"):
                        if child != "zookeeper":
                            client.delete("/" + child, recursive=True)
                    return
                except (NotEmptyError, NoNodeError):
                    if attempt == 4:
                        raise
                    time.sleep(0.1)
        finally:
            client.stop()
            client.close()

    def close(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            client.stop()
            client.close()
