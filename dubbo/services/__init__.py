"""Services every server can serve besides the user's: ``health``
(``grpc.health.v1.Health``, always on) and ``reflection`` (``grpc.reflection.v1`` and
``v1alpha``, with ``dubbo.Server(config, reflection=True)``).

Their .proto files ship in ``protos/``; their messages need protobuf (4.21 up to 7.x),
imported on the first call, not by ``import dubbo``.
"""

from .health import HealthServicer, ServingStatus
from .reflection import ReflectionServicer

__all__ = ["HealthServicer", "ReflectionServicer", "ServingStatus"]
