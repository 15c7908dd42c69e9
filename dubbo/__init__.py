"""Triple (gRPC-compatible) RPC for Python: blocking calls, a thread per stream."""

from __future__ import annotations

__version__ = "0.1.0"

from .bootstrap import Dubbo  # noqa: E402
from .client import Client  # noqa: E402
from .server import Server  # noqa: E402
from .status import RpcError, StatusCode  # noqa: E402

__all__ = ["Client", "Dubbo", "RpcError", "Server", "StatusCode", "__version__"]
