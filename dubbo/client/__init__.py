"""The client: ``Client`` makes calls over one connection per provider (``endpoint``),
balanced and retried by ``dubbo.cluster``."""

from .client import Client

__all__ = ["Client"]
