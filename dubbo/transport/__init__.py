"""One HTTP/2 connection over a non-blocking socket: the only package that touches h2.

``connection`` holds ``H2Transport`` (socket, h2 state machine, flow control),
``messages`` the per-stream ``Inbox`` and ``MessageWriter``, ``ioloop`` the selector
thread, ``timer`` the timer thread, ``tls`` TLS set-up and ``hpack_cache`` the header
caches.
"""

from .connection import (
    DEFAULT_MAX_HEADER_LIST_SIZE,
    DEFAULT_MAX_SEND_BUFFER,
    H2Transport,
    Payload,
    payload_size,
    peer_name,
)
from .messages import FAST_PRODUCER, Inbox, MessageWriter

__all__ = [
    "DEFAULT_MAX_HEADER_LIST_SIZE",
    "DEFAULT_MAX_SEND_BUFFER",
    "FAST_PRODUCER",
    "H2Transport",
    "Inbox",
    "MessageWriter",
    "Payload",
    "payload_size",
    "peer_name",
]
