"""The ZooKeeper registry, through kazoo: one session per bootstrap, shared by its
servers (which register providers) and clients (which watch them).

kazoo does the hard parts (reconnecting, session expiry, re-arming watches). What is
ours: nodes we own are ephemeral and put back after a session expiry; a watched folder
is created first (a ChildrenWatch on a missing folder gives up silently, PROTOCOL.md
§11); and while ZooKeeper is down a watcher simply hears nothing, so consumers go on
with the providers they last saw.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..configs import RegistryConfig
from ..status import StatusCode, UnavailableError
from .url import RegistryURL, java_encode, parse_node

__all__ = ["ZookeeperRegistry", "Subscription"]

log = logging.getLogger("dubbo.registry")

DEFAULT_SESSION_TIMEOUT = 10.0  # seconds: how long a dead provider's node outlives it
DEFAULT_CONNECT_TIMEOUT = 5.0


class Subscription:
    """A watch on one service's providers; ``cancel()`` stops it."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ZookeeperRegistry:
    """``_lock`` guards ``_nodes`` and ``_session_lost``."""

    def __init__(self, config: RegistryConfig, *,
                 session_timeout: float | None = None,
                 connect_timeout: float | None = None) -> None:
        try:
            from kazoo.client import KazooClient
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("the ZooKeeper registry needs kazoo: "
                              "pip install 'dubbo[zookeeper]'") from exc
        if config.protocol != "zookeeper":
            raise ValueError(f"unsupported registry {config.protocol!r}: use zookeeper://")
        hosts = [f"{config.host}:{config.port}"]
        backup = config.parameters.get("backup")
        if backup:
            hosts += [h.strip() for h in backup.split(",") if h.strip()]
        self.address = ",".join(hosts)
        if session_timeout is None:
            session = config.parameters.get("session")
            session_timeout = int(session) / 1000 if session else DEFAULT_SESSION_TIMEOUT
        if connect_timeout is None:
            timeout = config.parameters.get("timeout")
            connect_timeout = int(timeout) / 1000 if timeout else DEFAULT_CONNECT_TIMEOUT
        self._connect_timeout = connect_timeout  # also bounds an unregister's wait
        self.root = "/" + (config.group or "dubbo").strip("/")
        auth = None
        if config.username:
            auth = [("digest", f"{config.username}:{config.password or ''}")]
        self._zk = KazooClient(
            hosts=self.address, timeout=session_timeout, auth_data=auth,
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0},
            command_retry={"max_tries": 3, "delay": 0.1, "backoff": 2, "max_delay": 1.0})
        self._lock = threading.Lock()
        self._nodes: set[str] = set()  # ephemeral nodes of ours, put back after expiry
        self._session_lost = False
        self._closing = False  # close() ends the session on purpose: no warning
        self._zk.add_listener(self._state_changed)
        try:
            self._zk.start(timeout=connect_timeout)
        except Exception as exc:
            self._zk.stop()
            self._zk.close()
            raise UnavailableError(StatusCode.UNAVAILABLE,
                                   f"cannot reach ZooKeeper at {self.address}: {exc}") from exc

    # -- paths ---------------------------------------------------------------------

    def folder(self, service: str, category: str = "providers") -> str:
        return f"{self.root}/{java_encode(service)}/{category}"

    def node_path(self, url: RegistryURL, category: str = "providers") -> str:
        return f"{self.folder(url.service, category)}/{url.node_name()}"

    # -- providers and consumers ----------------------------------------------------

    def register(self, url: RegistryURL, category: str = "providers") -> str:
        """Write ``url``'s ephemeral node; return its path."""
        from kazoo.exceptions import NodeExistsError

        path = self.node_path(url, category)
        try:
            self._bounded(self._zk.create_async(path, b"", ephemeral=True, makepath=True),
                          f"registering {url.service}")
        except NodeExistsError:  # left by a session of ours that has not expired yet
            self._bounded(self._zk.delete_async(path), f"registering {url.service}")
            self._bounded(self._zk.create_async(path, b"", ephemeral=True, makepath=True),
                          f"registering {url.service}")
        with self._lock:
            self._nodes.add(path)
        log.info("registered %s", url.to_string())
        return path

    def _bounded(self, result: Any, what: str) -> Any:
        """Wait for a kazoo request at most the connect timeout: while ZooKeeper is
        away kazoo holds requests until it is back, and nobody must wait on that."""
        try:
            return result.get(timeout=self._connect_timeout)
        except self._zk.handler.timeout_exception:
            raise UnavailableError(
                StatusCode.UNAVAILABLE,
                f"ZooKeeper at {self.address} did not answer {what} within "
                f"{self._connect_timeout:g}s") from None

    def unregister(self, path: str) -> None:
        from kazoo.exceptions import KazooException, NoNodeError

        with self._lock:
            self._nodes.discard(path)
        # While ZooKeeper is unreachable kazoo queues the delete until it is back: stop()
        # and close() must not wait for that (the node goes with it or with the session).
        result = self._zk.delete_async(path)
        try:
            result.get(timeout=self._connect_timeout if self._zk.connected else 0)
        except NoNodeError:
            pass
        except KazooException as exc:  # ZooKeeper is down: the node goes with the session
            log.warning("could not unregister %s: %s", path, exc)
        except self._zk.handler.timeout_exception:
            log.warning("could not unregister %s now: ZooKeeper is unreachable", path)

    def subscribe(self, service: str,
                  on_change: Callable[[list[RegistryURL]], None]) -> Subscription:
        """Call ``on_change(providers)`` now and on every change of the folder."""
        from kazoo.recipe.watchers import ChildrenWatch

        folder = self.folder(service)
        self._zk.ensure_path(folder)
        subscription = Subscription()

        def changed(children: list[str]) -> bool:
            if subscription.cancelled:
                return False
            urls = [url for url in map(parse_node, children) if url is not None]
            try:
                on_change(urls)
            except Exception:
                log.exception("provider list callback for %s failed", service)
            return True

        ChildrenWatch(self._zk, folder, changed)
        return subscription

    # -- session -------------------------------------------------------------------

    def _state_changed(self, state: str) -> None:
        from kazoo.protocol.states import KazooState

        # kazoo's listener runs on its connection thread: never block here.
        if state == KazooState.LOST:
            if not self._closing:
                log.warning("ZooKeeper session to %s expired", self.address)
            with self._lock:
                self._session_lost = True
        elif state == KazooState.CONNECTED:
            with self._lock:
                lost, self._session_lost = self._session_lost, False
            if lost:
                self._zk.handler.spawn(self._restore)

    def _restore(self) -> None:
        """After a session expiry our ephemeral nodes are gone: write them again."""
        from kazoo.exceptions import KazooException, NodeExistsError

        with self._lock:
            nodes = list(self._nodes)
        for path in nodes:
            try:
                self._zk.create(path, b"", ephemeral=True, makepath=True)
            except NodeExistsError:
                pass
            except KazooException as exc:
                log.warning("could not register %s again: %s", path, exc)
        if nodes:
            log.info("registered %d node(s) again after the session expired", len(nodes))

    def close(self) -> None:
        """Remove our nodes and end the session."""
        with self._lock:
            nodes, self._nodes = list(self._nodes), set()
        for path in nodes:
            self.unregister(path)
        self._closing = True
        self._zk.stop()
        self._zk.close()
