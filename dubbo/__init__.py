"""Triple (gRPC-compatible) RPC for Python: blocking calls, a thread per stream.

The package in layers, each importing only those below it:

* ``dubbo.status``, ``dubbo.wire``: the Triple/gRPC wire protocol, without I/O
  (message framing, compression, deadlines, metadata, flood limits);
* ``dubbo.transport``: one HTTP/2 connection over a socket (the only code that
  touches h2), its loop thread, timers and TLS;
* ``dubbo.server`` and ``dubbo.client``: calls on top of the transport;
* ``dubbo.cluster`` and ``dubbo.registry``: many providers, balancing and discovery;
* ``dubbo.bootstrap``: ``Dubbo``, which wires a registry to servers and clients.
"""

from __future__ import annotations

from ._version import __version__
from .bootstrap import Dubbo
from .client import Client
from .grpc_compat.channel import Channel
from .server import Server
from .status import RpcError, StatusCode
from .wire.limits import FloodLimits

__all__ = ["Channel", "Client", "Dubbo", "FloodLimits", "RpcError", "Server", "StatusCode",
           "__version__"]
