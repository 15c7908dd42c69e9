"""Configuration objects named as in apache-dubbo, so its programs run unchanged."""

from __future__ import annotations

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


def _float_or_none(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


@dataclass
class ServiceConfig:
    """What a server serves and where: one service handler, host, port, protocol."""

    service_handler: RpcServiceHandler
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    protocol: str = "tri"
    group: str | None = None
    version: str | None = None

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

    ``timeout`` (seconds) is the default deadline of every call made through it.
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
    parameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str) -> ReferenceConfig:
        scheme, host, port, path, params = _split_url(url, DEFAULT_PORT)
        if scheme != "tri":
            raise ValueError(f"unsupported protocol {scheme!r} in {url!r}: use tri://")
        if not path:
            raise ValueError(f"no service in {url!r}: expected tri://host:port/service")
        return cls(
            protocol=scheme,
            service=path,
            host=host,
            port=port,
            group=params.get("group"),
            version=params.get("version"),
            timeout=_float_or_none(params.get("timeout")),
            load_balance=params.get("load_balance") or params.get("loadbalance"),
            cluster=params.get("cluster"),
            retries=int(params["retries"]) if params.get("retries") else None,
            parameters=params,
        )

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class RegistryConfig:
    """Where providers are registered: ``zookeeper://host:port``."""

    protocol: str = "zookeeper"
    host: str = "127.0.0.1"
    port: int = 2181
    load_balance: str | None = None
    group: str | None = None
    version: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str) -> RegistryConfig:
        scheme, host, port, _path, params = _split_url(url, 2181)
        return cls(protocol=scheme, host=host, port=port,
                   load_balance=params.get("load_balance") or params.get("loadbalance"),
                   group=params.get("group"), version=params.get("version"), parameters=params)


@dataclass
class ApplicationConfig:
    """The application's name, sent to providers as ``tri-consumer-appname``."""

    name: str = "dubbo-python"
