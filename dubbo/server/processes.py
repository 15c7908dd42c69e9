"""More than one core: ``dubbo.Server(config, processes=N)`` serves one port from N
processes, each the usual thread-per-stream server.

One CPython process runs Python code on one core at a time (the GIL), so a busy server
tops out at one core however many worker threads it has. With ``processes=N``,
``start()`` binds the port in this process (``port=0`` resolves to one port; an error
names it), then forks N-1 serving processes before any thread of the server starts, and
serves in this process too: N processes serve, this one included, and ``processes=1``
is exactly the single-process server (no fork, nothing extra).

How connections are spread: on Linux every process listens on a socket of its own,
bound to the same port with ``SO_REUSEPORT``; the kernel hashes each new connection to
one of them, so connections spread evenly whatever each process is doing. (Sharing the
one inherited listening socket instead lets whichever process wakes first accept a
whole burst of connections: see docs/processes.md for the figures.) Elsewhere (no
Linux-style ``SO_REUSEPORT`` balancing) the children share the inherited socket. One
HTTP/2 connection is served by one process for its whole life.

Each child is tied to this process by a socketpair (``multiprocessing.Pipe``): health
changes are sent over it (and acknowledged, so ``server.health.set()`` returns once
every process answers with the new status), and so is ``stop(grace)``. When this
process ends in any way, even SIGKILL, the child reads end-of-file and stops
gracefully; on Linux it also gets SIGTERM (``PR_SET_PDEATHSIG``) when the forking
thread was the main thread. Children ignore SIGINT (Ctrl-C in a terminal reaches the
whole process group: this process stops them, each with the grace its ``stop()`` got)
and stop gracefully on SIGTERM. A child that dies is logged and not restarted: forking
again from a process whose threads are running is unsafe (a lock held by another
thread at the fork stays held forever in the child); the others go on serving the
port. Run the server under a supervisor (systemd, Kubernetes) if a lost process must
come back.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import Connection, Pipe
from typing import TYPE_CHECKING, Any

from ..services.health import HealthServicer, ServingStatus, serving_status
from . import signals

if TYPE_CHECKING:  # pragma: no cover
    from .server import Server

__all__ = ["ProcessGroup", "SharedHealth", "check_processes", "reuse_port"]

log = logging.getLogger("dubbo.server")

# How long a child has, past stop()'s grace, to exit before it is killed (SIGKILL).
EXIT_MARGIN = 10.0
# How long health.set() waits for one process to acknowledge a change.
HEALTH_ACK_TIMEOUT = 2.0
# A child looks at its parent's pipe (and runs signal handlers) at least this often.
CHILD_POLL = 1.0
_PR_SET_PDEATHSIG = 1


def check_processes(processes: int) -> None:
    """Fail at construction, not at start(), on a count this platform cannot serve."""
    if not isinstance(processes, int) or processes < 1:
        raise ValueError("processes must be an int of at least 1")
    if processes > 1 and not hasattr(os, "fork"):
        raise RuntimeError(f"processes={processes} needs os.fork(), which this platform "
                           "lacks; run one server per process on separate ports instead")


def reuse_port() -> bool:
    """Whether each process gets a listening socket of its own (SO_REUSEPORT): on
    Linux, where the kernel balances new connections over such sockets."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _bind_same(sock: socket.socket, host: str) -> socket.socket:
    """Another listening socket on ``sock``'s address (both with SO_REUSEPORT)."""
    address = sock.getsockname()
    other = socket.socket(sock.family, socket.SOCK_STREAM)
    try:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(address)
        other.listen(512)
        other.setblocking(False)
    except OSError as exc:
        other.close()
        raise OSError(exc.errno, f"cannot serve on {host}:{address[1]} from one more "
                                 f"process: {exc.strerror or exc}") from exc
    return other


class SharedHealth(HealthServicer):
    """``server.health`` of a server with ``processes`` > 1: a change made here is also
    made in every serving process before the call returns, so a probe gets the same
    answer whichever process its connection reached."""

    group: ProcessGroup | None = None  # set once the children run; None in a child

    def __init__(self) -> None:
        super().__init__()
        # Held across a change and its broadcast: every process sees changes in one order.
        self._order = threading.Lock()

    def set(self, service: str, status: ServingStatus | str | int) -> None:
        value = serving_status(status)
        with self._order:
            super().set(service, value)
            if self.group is not None:
                self.group.broadcast(("set", service, int(value)))

    def clear(self, service: str) -> None:
        with self._order:
            super().clear(service)
            if self.group is not None:
                self.group.broadcast(("clear", service))

    def enter_graceful_shutdown(self) -> None:
        with self._order:
            super().enter_graceful_shutdown()
            if self.group is not None:
                self.group.broadcast(("shutdown",))


class _Child:
    """One forked serving process, as its parent sees it."""

    __slots__ = ("pid", "channel", "lock", "alive", "watcher", "status")

    def __init__(self, pid: int, channel: Connection) -> None:
        self.pid = pid
        self.channel = channel
        self.lock = threading.Lock()  # guards channel (one message and its ack at a time)
        self.alive = True  # cleared by the watcher thread once the child was reaped
        self.watcher: threading.Thread | None = None
        self.status: int | None = None  # os.waitpid's status, once reaped


class ProcessGroup:
    """The serving processes a ``Server`` forked; made by ``spawn``."""

    def __init__(self, children: list[_Child]) -> None:
        self.children = children
        self.stopping = False  # set by stop(): an exit after it is expected, not logged

    @classmethod
    def spawn(cls, server: Server, sock: socket.socket, count: int) -> ProcessGroup:
        """Fork ``count`` processes serving ``server`` on ``sock``'s port. Runs in
        start(), before any thread of ``server`` exists; never returns in a child."""
        if any(t.name.startswith("dubbo") for t in threading.enumerate()):
            log.warning("forking serving processes while dubbo threads run (a client "
                        "or another server): start this server before them")
        on_main = threading.current_thread() is threading.main_thread()
        parent = os.getpid()
        children: list[_Child] = []
        try:
            for _ in range(count):
                own = _bind_same(sock, server.config.host) if reuse_port() else None
                ours, theirs = Pipe(duplex=True)
                try:
                    pid = os.fork()
                except BaseException:
                    for item in (own, ours, theirs):
                        if item is not None:
                            item.close()
                    raise
                if pid == 0:  # the child: serve until told to stop, then leave
                    code = 1
                    try:
                        ours.close()
                        for sibling in children:
                            sibling.channel.close()
                        if own is not None:
                            sock.close()
                        code = _child_main(server, own or sock, theirs, parent, on_main)
                    except BaseException:
                        log.exception("serving process %d failed", os.getpid())
                    finally:
                        for stream in (sys.stdout, sys.stderr):
                            try:
                                stream.flush()
                            except Exception:
                                pass
                        os._exit(code)
                theirs.close()
                if own is not None:
                    own.close()  # the child's alone: if it dies, the kernel stops using it
                children.append(_Child(pid, ours))
        except BaseException:
            group = cls(children)
            group.stopping = True
            for child in children:
                _kill(child.pid)
                _reap(child)
                child.channel.close()
            raise
        group = cls(children)
        if isinstance(server.health, SharedHealth):
            server.health.group = group
        for child in children:
            child.watcher = threading.Thread(target=group._watch, args=(child,),
                                             name=f"dubbo-process-{child.pid}", daemon=True)
            child.watcher.start()
        return group

    @property
    def pids(self) -> list[int]:
        """The children still running."""
        return [child.pid for child in self.children if child.alive]

    def _watch(self, child: _Child) -> None:
        """One thread per child: reap it when it exits, and say so unless asked to."""
        _reap(child)
        if not self.stopping:
            alive = 1 + len(self.pids)
            log.error("serving process %d %s; it is not restarted; %d process%s serve%s on",
                      child.pid, _describe(child.status), alive,
                      "" if alive == 1 else "es", "s" if alive == 1 else "")

    def broadcast(self, message: tuple[Any, ...]) -> None:
        """Send a health change to every live child; return once each applied it (or
        HEALTH_ACK_TIMEOUT passed for it: a stuck process holds nobody up for long)."""
        for child in self.children:
            with child.lock:
                if not child.alive or child.channel.closed:
                    continue
                try:
                    child.channel.send(message)
                    if child.channel.poll(HEALTH_ACK_TIMEOUT):
                        child.channel.recv()
                    else:
                        log.warning("serving process %d did not apply %s within %.0f s",
                                    child.pid, message, HEALTH_ACK_TIMEOUT)
                except (OSError, EOFError):  # it died meanwhile; its watcher says so
                    pass

    def stop(self, grace: float | None) -> None:
        """Ask every child to stop with ``grace`` (they drain at the same time as this
        process); ``join`` waits for them."""
        self.stopping = True
        for child in self.children:
            with child.lock:
                if child.channel.closed:
                    continue
                try:
                    child.channel.send(("stop", grace))
                except OSError:  # dead already
                    pass

    def join(self, grace: float | None) -> None:
        """Wait for every child to exit: ``grace`` plus EXIT_MARGIN seconds, then
        SIGKILL; no child outlives this call."""
        deadline = None if grace is None else time.monotonic() + grace + EXIT_MARGIN
        for child in self.children:
            watcher = child.watcher
            if watcher is not None:
                watcher.join(None if deadline is None
                             else max(0.0, deadline - time.monotonic()))
                if watcher.is_alive():
                    log.error("serving process %d still running %.0f s after its grace; "
                              "killing it", child.pid, EXIT_MARGIN)
                    _kill(child.pid)
                    watcher.join(5.0)
            with child.lock:
                child.channel.close()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _reap(child: _Child) -> None:
    """Wait for ``child`` to exit (blocks: watcher threads are joined with a timeout)."""
    try:
        _, status = os.waitpid(child.pid, 0)
        child.status = status
    except ChildProcessError:  # reaped by someone else (an os.wait() elsewhere)
        child.status = None
    child.alive = False


def _describe(status: int | None) -> str:
    if status is None:
        return "exited"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"was killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _child_main(server: Server, sock: socket.socket, channel: Connection, parent: int,
                on_main: bool) -> int:
    """A serving process: serve ``sock`` until the parent says stop or goes away."""
    # The forking thread is this process's main thread now. The parent stops us on
    # Ctrl-C; SIGTERM stops this process gracefully, whatever handler the parent had.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signals._on_sigterm)
    if on_main and sys.platform.startswith("linux"):  # the parent's thread is the process
        _die_with_parent()
    if os.getppid() != parent:  # it died before we could watch it
        return 0
    health = server.health
    if isinstance(health, SharedHealth):
        health.group = None  # changes come from the parent, not from here
    server._processes = None
    grace: float | None = 5.0
    try:
        server._serve(sock)
        while True:
            if not channel.poll(CHILD_POLL):
                continue
            try:
                message = channel.recv()
            except (EOFError, OSError):
                log.warning("serving process %d: the server's main process is gone; "
                            "stopping", os.getpid())
                break
            kind = message[0]
            if kind == "stop":
                grace = message[1]
                break
            if kind == "set":
                HealthServicer.set(health, message[1], message[2])
            elif kind == "clear":
                HealthServicer.clear(health, message[1])
            elif kind == "shutdown":
                HealthServicer.enter_graceful_shutdown(health)
            channel.send(True)
    except (KeyboardInterrupt, SystemExit):  # SIGTERM: stop as the parent would
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one graceful stop, not cut short
    server.stop(grace)
    return 0


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM): the kernel signals us when the forking thread
    (the main thread) ends, even by SIGKILL. The pipe's end-of-file covers the rest."""
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the pipe alone tells us
        pass
