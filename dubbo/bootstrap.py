"""``dubbo.Dubbo``: the bootstrap that builds servers and clients from configs, and
registers and finds them in a registry when it has one."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from typing import Any

from ._version import __version__
from .client import Client
from .configs import ApplicationConfig, ReferenceConfig, RegistryConfig, ServiceConfig
from .registry.url import RegistryURL, consumer_url, provider_url
from .server import Server

__all__ = ["Dubbo", "RegisteredServer"]

log = logging.getLogger("dubbo.bootstrap")

DEFAULT_UNREGISTER_DELAY = 1.0  # seconds between leaving the registry and GOAWAY


class Dubbo:
    """Builds servers and clients that share an application and a registry.

    Each instance is independent: unlike apache-dubbo's process-wide singleton, two
    bootstraps in one process share no state. The registry session opens with the
    first server or client that needs it and ends when the last one is closed (or at
    ``close()``).
    """

    def __init__(self, application_config: ApplicationConfig | None = None,
                 registry_config: RegistryConfig | None = None, *,
                 session_timeout: float | None = None) -> None:
        self.application_config = application_config or ApplicationConfig()
        self.registry_config = registry_config
        self._session_timeout = session_timeout
        self._lock = threading.Lock()  # guards _registry and _users
        self._registry: Any = None
        self._users = 0

    # -- the registry session ------------------------------------------------------

    def _acquire_registry(self) -> Any:
        from .registry.zookeeper import ZookeeperRegistry

        assert self.registry_config is not None
        with self._lock:
            if self._registry is None:
                options = {} if self._session_timeout is None else \
                    {"session_timeout": self._session_timeout}
                self._registry = ZookeeperRegistry(self.registry_config, **options)
            self._users += 1
            return self._registry

    def _release_registry(self, registry: Any) -> None:
        """Let go of ``registry``; one that close() already ended counts no more."""
        with self._lock:
            if registry is not self._registry:
                return
            self._users -= 1
            registry = self._registry if self._users <= 0 else None
            if registry is not None:
                self._registry = None
        if registry is not None:
            registry.close()

    def close(self) -> None:
        """End the registry session now (servers and clients made here stay usable
        without it)."""
        with self._lock:
            registry, self._registry, self._users = self._registry, None, 0
        if registry is not None:
            registry.close()

    # -- servers and clients -------------------------------------------------------

    def create_server(self, config: ServiceConfig, *, advertised_host: str | None = None,
                      unregister_delay: float = DEFAULT_UNREGISTER_DELAY,
                      **options: Any) -> Server:
        """A server for ``config``; with a registry, ``start()`` also registers every
        service it serves and ``stop()`` unregisters them first (see RegisteredServer).
        ``advertised_host``: the address consumers should dial, when the bound one
        (``config.host``) is not it; never 0.0.0.0."""
        if self.registry_config is None:
            return Server(config, **options)
        if config.version is None and self.registry_config.version:
            config = dataclasses.replace(config, version=self.registry_config.version)
        return RegisteredServer(self, config, advertised_host=advertised_host,
                                unregister_delay=unregister_delay, **options)

    def create_client(self, reference: ReferenceConfig, **options: Any) -> Client:
        """A client for ``reference``; with a registry it calls the providers listed
        there that match its protocol, group and version, and follows the list as it
        changes. It returns once the list has been read."""
        if self.registry_config is None:
            return Client(reference, application=self.application_config, **options)
        defaults: dict[str, Any] = {"load_balance": self.registry_config.load_balance,
                                    "version": self.registry_config.version}
        reference = dataclasses.replace(reference, **{
            key: value for key, value in defaults.items()
            if value and getattr(reference, key) is None})
        registry = self._acquire_registry()
        try:
            client = Client(reference, application=self.application_config, providers=[],
                            **options)
        except BaseException:
            self._release_registry(registry)
            raise
        service = reference.service

        def providers_changed(urls: list[RegistryURL]) -> None:
            matching = [u for u in urls if u.serves(service, reference.protocol,
                                                    reference.group, reference.version)]
            client.set_providers([(u.host, u.port, u.weight) for u in matching])

        subscription = None
        try:
            subscription = registry.subscribe(service, providers_changed)
            consumer = registry.register(consumer_url(
                _local_address(), service, application=self.application_config.name,
                group=reference.group, version=reference.version, release=__version__,
                extra=self.application_config.url_parameters()),
                category="consumers")
        except BaseException:
            if subscription is not None:
                subscription.cancel()
            client.close()
            self._release_registry(registry)
            raise

        def leave() -> None:
            subscription.cancel()
            registry.unregister(consumer)
            self._release_registry(registry)

        client.on_close(leave)
        return client


class RegisteredServer(Server):
    """A server whose services are registered while it serves.

    ``start()`` registers each service after the port is bound; ``stop()`` unregisters
    first, waits ``unregister_delay`` for consumers to drop this provider, and only
    then sends GOAWAY and drains, so a rolling restart costs no call. After a
    registry session expires, the nodes are written again."""

    def __init__(self, bootstrap: Dubbo, config: ServiceConfig, *,
                 advertised_host: str | None, unregister_delay: float,
                 **options: Any) -> None:
        super().__init__(config, **options)
        self.bootstrap = bootstrap
        self.unregister_delay = unregister_delay
        self.advertised_host = advertised_host
        self._registry: Any = None
        self._nodes: list[str] = []

    def start(self) -> RegisteredServer:
        super().start()
        try:
            self._register()
        except BaseException:
            self.stop(grace=0)  # ours: the nodes already written go, the session is let go
            raise
        return self

    def _register(self) -> None:
        registry = self.bootstrap._acquire_registry()
        self._registry = registry
        host = self.advertised_host or _advertised(self.config.host)
        for name, providers in self.services.items():
            for (group, version), service in providers.items():
                url = provider_url(
                    self.config.protocol, host, self.port, name,
                    methods=list(service.method_handlers),
                    application=self.bootstrap.application_config.name,
                    group=group, version=version, weight=self.config.weight,
                    release=__version__,
                    extra=self.bootstrap.application_config.url_parameters())
                self._nodes.append(registry.register(url))

    def stop(self, grace: float | None = 5.0) -> None:
        self.health.enter_graceful_shutdown()  # health probes, too, stop sending calls
        registry, self._registry = self._registry, None
        if registry is not None:
            for path in self._nodes:
                registry.unregister(path)
            self._nodes = []
            if self.unregister_delay > 0:
                time.sleep(self.unregister_delay)  # consumers hear of it and stop picking us
            self.bootstrap._release_registry(registry)
        super().stop(grace)


def _advertised(bound: str) -> str:
    """The host to write in the registry for a server bound to ``bound``: itself,
    unless it is a wildcard, which other machines cannot dial."""
    if bound not in ("", "0.0.0.0", "::"):
        return bound
    return _local_address()


def _local_address() -> str:
    """This machine's address as its name resolves (for nodes other hosts read)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
