"""The built-in services' message classes, made on first use from the compiled
descriptors in ``_descriptors``: protobuf is imported only then, so ``import dubbo``
works without it.

The files go into a pool of their own, not protobuf's default pool: grpcio-health-checking
and grpcio-reflection add their own (differing) copies of the same files there, and
two different files of one name in one pool fail to load. Messages are the same on
the wire either way.
"""

from __future__ import annotations

import threading
from typing import Any

from ._descriptors import FILES

__all__ = ["descriptor_pool", "message_class"]

_lock = threading.Lock()  # guards _pool and _classes while they are filled
_pool: Any = None
_classes: dict[str, Any] = {}


def descriptor_pool() -> Any:
    """The ``google.protobuf.descriptor_pool.DescriptorPool`` holding the built-in
    services' files (health, reflection v1 and v1alpha)."""
    global _pool
    with _lock:
        if _pool is None:
            from google.protobuf import descriptor_pool as pool_module

            pool = pool_module.DescriptorPool()
            for data in FILES.values():
                pool.AddSerializedFile(data)
            _pool = pool
        return _pool


def message_class(full_name: str) -> Any:
    """The message class of ``full_name`` (e.g. ``grpc.health.v1.HealthCheckRequest``)."""
    cls = _classes.get(full_name)
    if cls is not None:
        return cls
    pool = descriptor_pool()
    with _lock:
        cls = _classes.get(full_name)
        if cls is None:
            from google.protobuf import message_factory

            descriptor = pool.FindMessageTypeByName(full_name)
            get_class = getattr(message_factory, "GetMessageClass", None)
            if get_class is not None:  # protobuf >= 4.22
                cls = get_class(descriptor)
            else:  # 4.21: GetPrototype (removed in 5.x)
                factory: Any = message_factory.MessageFactory(pool)
                cls = factory.GetPrototype(descriptor)
            _classes[full_name] = cls
        return cls
