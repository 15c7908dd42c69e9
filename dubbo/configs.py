"""Configuration objects named as in apache-dubbo, so its programs run unchanged."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .proxy.handlers import RpcServiceHandler

__all__ = ["ServiceConfig", "ReferenceConfig", "RegistryConfig", "ApplicationConfig"]

DEFAULT_PORT = 50051


def _split_url(url: str, default_port: int) -> tuple[str, str, int, str, dict[str, str]]:
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"expected a URL like tri://host:port/service, got {url!r}")
    params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return (parts.scheme, parts.hostname, parts.port or default_port, parts.path.strip("/"),
            params)


def _split_hosts(url: str, default_port: int) -> list[tuple[str, int]]:
    """The ``host:port`` list of ``scheme://h1:p1,h2:p2/path``."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    addresses = []
    for item in filter(None, (part.strip() for part in netloc.split(","))):
        parts = urlsplit(f"//{item}")
        if not parts.hostname:
            raise ValueError(f"bad address {item!r} in {url!r}")
        addresses.append((parts.hostname, parts.port or default_port))
    return addresses


# What RegistryConfig.from_url understands (session, timeout: milliseconds, as Dubbo's).
_REGISTRY_PARAMETERS = frozenset({
    "load_balance", "loadbalance", "group", "version", "backup", "session", "timeout"})
# What ReferenceConfig.from_url understands; anything else is refused, not dropped.
_REFERENCE_PARAMETERS = frozenset({
    "service", "interface", "timeout", "group", "version", "load_balance", "loadbalance",
    "cluster", "retries", "forks", "compression"})


def _float_or_none(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


@dataclass
class ServiceConfig:
    """What a server serves and where: one service handler, host, port, protocol.

    ``group`` and ``version`` name this provider the Dubbo way: requests carrying
    ``tri-service-group``/``tri-service-version`` are routed on them.
    ``compression`` compresses replies when the client accepts that encoding.
    """

    service_handler: RpcServiceHandler | None = None  # None: add services to the Server
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    protocol: str = "tri"
    group: str | None = None
    version: str | None = None
    compression: str | None = None
    weight: int = 100  # written to the registry node: this provider's share of calls

    def __post_init__(self) -> None:
        if self.protocol != "tri":
            raise ValueError(f"unsupported protocol {self.protocol!r}: only 'tri' is served")
        if self.host is None:
            self.host = "127.0.0.1"
        if self.port is None:
            self.port = DEFAULT_PORT


@dataclass
class ReferenceConfig:
    """Which remote service a client calls: ``tri://host:port/service``.

    ``timeout`` (seconds) is the default deadline of every call made through it. In a
    URL, ``?timeout=`` is in milliseconds, as in every Dubbo URL (``timeout=3000``).
    ``compression`` compresses every request of this reference (gzip, deflate, ...).
    """

    protocol: str = "tri"
    service: str = ""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    group: str | None = None
    version: str | None = None
    timeout: float | None = None
    load_balance: str | None = None
    cluster: str | None = None
    retries: int | None = None
    compression: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    forks: int | None = None  # cluster "forking": providers a unary call goes to at once
    # More than one provider without a registry: tri://h1:p1,h2:p2/Service.
    addresses: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.addresses:
            self.addresses = [(self.host, self.port)]

    @classmethod
    def from_url(cls, url: str) -> ReferenceConfig:
        fields, params, addresses = _reference_fields(url)
        return cls(**fields, parameters=dict(params), addresses=list(addresses))

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@functools.lru_cache(maxsize=64)
def _reference_fields(url: str) -> tuple[dict[str, Any], tuple[tuple[str, str], ...],
                                         tuple[tuple[str, int], ...]]:
    """``ReferenceConfig.from_url``'s parse, remembered per URL (a client made per
    connection parses the same URL each time); the caller copies what is mutable."""
    addresses = _split_hosts(url, DEFAULT_PORT)
    if len(addresses) > 1:
        first = f"{addresses[0][0]}:{addresses[0][1]}"
        url = url.replace(urlsplit(url).netloc, first, 1)
    scheme, host, port, path, params = _split_url(url, DEFAULT_PORT)
    if scheme != "tri":
        raise ValueError(f"unsupported protocol {scheme!r} in {url!r}: use tri://")
    unknown = sorted(set(params) - _REFERENCE_PARAMETERS)
    if unknown:
        raise ValueError(f"unsupported parameter(s) {', '.join(unknown)} in {url!r}; "
                         f"supported: {', '.join(sorted(_REFERENCE_PARAMETERS))}")
    service = params.get("service") or params.get("interface") or path
    if not service:
        raise ValueError(f"no service in {url!r}: expected tri://host:port/service")
    timeout_ms = _float_or_none(params.get("timeout"))
    return dict(
        protocol=scheme,
        service=service,
        host=host,
        port=port,
        group=params.get("group"),
        version=params.get("version"),
        timeout=None if timeout_ms is None else timeout_ms / 1000.0,
        load_balance=params.get("load_balance") or params.get("loadbalance"),
        cluster=params.get("cluster"),
        retries=int(params["retries"]) if params.get("retries") else None,
        compression=params.get("compression"),
        forks=int(params["forks"]) if params.get("forks") else None,
    ), tuple(params.items()), tuple(addresses)


@dataclass
class RegistryConfig:
    """Where providers are registered: ``zookeeper://host:port``."""

    protocol: str = "zookeeper"
    host: str = "127.0.0.1"
    port: int = 2181
    username: str | None = None
    password: str | None = None
    load_balance: str | None = None
    group: str | None = None
    version: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str) -> RegistryConfig:
        """``zookeeper://host:port?group=root&backup=h2:p2&session=ms&timeout=ms``;
        ``load_balance`` is the default balancer and ``version`` the default service
        version of what a bootstrap with this registry creates."""
        scheme, host, port, _path, params = _split_url(url, 2181)
        unknown = sorted(set(params) - _REGISTRY_PARAMETERS)
        if unknown:
            raise ValueError(f"unsupported parameter(s) {', '.join(unknown)} in {url!r}; "
                             f"supported: {', '.join(sorted(_REGISTRY_PARAMETERS))}")
        parts = urlsplit(url)
        return cls(protocol=scheme, host=host, port=port, username=parts.username,
                   password=parts.password,
                   load_balance=params.get("load_balance") or params.get("loadbalance"),
                   group=params.get("group"), version=params.get("version"), parameters=params)


@dataclass
class ApplicationConfig:
    """The application: its name goes to providers as ``tri-consumer-appname``, and
    every field set is written into the registry nodes of its providers and consumers
    under Dubbo Java's keys (``url_parameters``), where admin consoles show them."""

    name: str = "dubbo-python"
    version: str | None = None
    owner: str | None = None
    organization: str | None = None
    architecture: str | None = None
    environment: str | None = None

    def url_parameters(self) -> dict[str, str]:
        """The registry URL parameters Dubbo Java's ApplicationConfig writes."""
        keys = {"application.version": self.version, "owner": self.owner,
                "organization": self.organization, "architecture": self.architecture,
                "environment": self.environment}
        return {"application": self.name, **{k: v for k, v in keys.items() if v}}
