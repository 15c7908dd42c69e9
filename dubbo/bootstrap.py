"""``dubbo.Dubbo``: the bootstrap that builds servers and clients from configs."""

from __future__ import annotations

from typing import Any

from .client import Client
from .configs import ApplicationConfig, ReferenceConfig, RegistryConfig, ServiceConfig
from .server import Server

__all__ = ["Dubbo"]


class Dubbo:
    """Builds servers and clients that share an application (and, later, a registry).

    Each instance is independent: unlike apache-dubbo's process-wide singleton, two
    bootstraps in one process share no state.
    """

    def __init__(self, application_config: ApplicationConfig | None = None,
                 registry_config: RegistryConfig | None = None) -> None:
        if registry_config is not None:
            raise NotImplementedError(
                "registry-based discovery (zookeeper://) is not available yet; "
                "use ReferenceConfig.from_url('tri://host:port/service')")
        self.application_config = application_config or ApplicationConfig()
        self.registry_config = registry_config

    def create_server(self, config: ServiceConfig, **options: Any) -> Server:
        return Server(config, **options)

    def create_client(self, reference: ReferenceConfig, **options: Any) -> Client:
        return Client(reference, application=self.application_config, **options)
