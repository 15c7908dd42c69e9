"""Registry URLs (sans-I/O): what a provider node says, written and read as Dubbo does.

A provider is registered as the node ``/{root}/{interface}/providers/{encoded URL}``:
``tri://host:port/interface?k=v&...`` with its parameters sorted by key and their values
raw, the whole string encoded once with Java's ``URLEncoder`` (form encoding). Nodes
are read form-style too, so Java's (``+`` for a space), dubbo-go's and apache-dubbo
3.0.0b1's (``quote(...)``, no path, ``service=`` instead of ``interface=``) all parse.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote_plus, unquote_plus, urlsplit

__all__ = ["RegistryURL", "java_encode", "java_decode", "provider_url", "consumer_url",
           "parse_node", "DEFAULT_WEIGHT"]

DEFAULT_WEIGHT = 100  # Dubbo's
DUBBO_PROTOCOL_VERSION = "2.0.2"  # the "dubbo" parameter every Dubbo 3 node carries


def java_encode(text: str) -> str:
    """``java.net.URLEncoder.encode(text, "UTF-8")``: form encoding, ``*`` kept, ``~``
    escaped (Python keeps it)."""
    return quote_plus(text, safe="*").replace("~", "%7E")


def java_decode(text: str) -> str:
    return unquote_plus(text)


@dataclass(frozen=True)
class RegistryURL:
    """One node: ``protocol://host:port/path?params``."""

    protocol: str
    host: str
    port: int
    path: str = ""
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def service(self) -> str:
        """The interface: ``interface=``, else the path, else ``service=`` (apache-dubbo)."""
        return self.params.get("interface") or self.path or self.params.get("service", "")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host  # consumers have no port

    @property
    def group(self) -> str | None:
        return self.params.get("group") or None

    @property
    def version(self) -> str | None:
        return self.params.get("version") or None

    @property
    def weight(self) -> int:
        try:
            return max(0, int(self.params.get("weight", DEFAULT_WEIGHT)))
        except ValueError:
            return DEFAULT_WEIGHT

    @property
    def enabled(self) -> bool:
        return self.params.get("enabled", "true").lower() != "false"

    def to_string(self) -> str:
        """The full string Java's ``URL.toFullString()`` makes: sorted keys, raw values."""
        query = "&".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.protocol}://{self.address}/{self.path}" + (f"?{query}" if query else "")

    def node_name(self) -> str:
        return java_encode(self.to_string())

    def serves(self, service: str, protocol: str = "tri", group: str | None = None,
               version: str | None = None) -> bool:
        """Whether a consumer of ``service`` with this ``group``/``version`` may call this
        provider: Java's ``UrlUtils.isMatch`` (group and version equal, ``None`` equals
        ``None``, ``*`` matches any; enabled; a providers node; the protocol)."""
        if self.protocol != protocol or not self.enabled:
            return False
        if self.params.get("category", "providers") != "providers":
            return False
        if self.service and self.service != service:
            return False
        return _same(group, self.group) and _same(version, self.version)


def _same(wanted: str | None, offered: str | None) -> bool:
    return wanted == "*" or (wanted or None) == (offered or None)


def parse_node(name: str) -> RegistryURL | None:
    """A node name as Java, dubbo-go or apache-dubbo wrote it; ``None`` if it is not a
    URL at all (a registry holds what anybody wrote)."""
    text = java_decode(name)
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    params: dict[str, str] = {}
    for pair in parts.query.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        # apache-dubbo 3.0.0b1 encodes its values once more: undo it when it shows.
        params[key] = java_decode(value) if "%" in value else value
    return RegistryURL(parts.scheme, host, port or 0, parts.path.strip("/"), params)


def provider_url(protocol: str, host: str, port: int, service: str, *,
                 methods: list[str], application: str, group: str | None = None,
                 version: str | None = None, weight: int | None = None,
                 release: str = "", extra: Mapping[str, str] | None = None) -> RegistryURL:
    """A provider's node as PROTOCOL.md §8 recommends (what Java and Go consumers need)."""
    params = {
        "anyhost": "false",
        "application": application,
        "deprecated": "false",
        "dubbo": DUBBO_PROTOCOL_VERSION,
        "dynamic": "true",
        "generic": "false",
        "interface": service,
        "methods": ",".join(sorted(methods)),
        "pid": str(os.getpid()),
        "release": release,
        "side": "provider",
        "timestamp": str(int(time.time() * 1000)),
    }
    if group:
        params["group"] = group
    if version:
        params["version"] = version
    if weight is not None and weight != DEFAULT_WEIGHT:
        params["weight"] = str(weight)
    params.update(extra or {})
    return RegistryURL(protocol, host, port, service, params)


def consumer_url(host: str, service: str, *, application: str, group: str | None = None,
                 version: str | None = None, methods: list[str] | None = None,
                 release: str = "", extra: Mapping[str, str] | None = None) -> RegistryURL:
    """The node a consumer writes under ``consumers/`` (as Java does; nothing reads it
    but operators' tools)."""
    params = {
        "application": application,
        "category": "consumers",
        "check": "false",
        "dubbo": DUBBO_PROTOCOL_VERSION,
        "interface": service,
        "pid": str(os.getpid()),
        "release": release,
        "side": "consumer",
        "timestamp": str(int(time.time() * 1000)),
    }
    if methods:
        params["methods"] = ",".join(sorted(methods))
    if group:
        params["group"] = group
    if version:
        params["version"] = version
    params.update(extra or {})
    return RegistryURL("consumer", host, 0, service, params)
