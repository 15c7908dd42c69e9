"""TLS for Triple connections (HTTP/2 over TLS, ALPN ``h2``).

A connection is read by its I/O loop while other threads write to it, and OpenSSL
must not be used by two threads at once, so a TLS connection is not an ``SSLSocket``:
OpenSSL runs on memory buffers (``ssl.SSLObject`` over two ``MemoryBIO``\\s) under
``_lock``, and socket I/O happens outside it. Encrypted output is taken from the
buffer only under the transport's send lock, so TLS records reach the socket in the
order OpenSSL made them.
"""

from __future__ import annotations

import ssl
import threading

__all__ = ["TLSLayer", "client_context", "server_context"]

_READ_SIZE = 256 * 1024


def server_context(certfile: str, keyfile: str | None = None, *,
                   cafile: str | None = None) -> ssl.SSLContext:
    """A server context offering ALPN ``h2``; with ``cafile``, clients must present a
    certificate it signed (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cafile)
    context.load_cert_chain(certfile, keyfile)
    if cafile is not None:
        context.verify_mode = ssl.CERT_REQUIRED
    return prepare(context)


def client_context(cafile: str | None = None, *, certfile: str | None = None,
                   keyfile: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server (system roots, or ``cafile``) and
    asks for ALPN ``h2``; ``certfile`` for mutual TLS."""
    context = ssl.create_default_context(cafile=cafile)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return prepare(context)


def prepare(context: ssl.SSLContext) -> ssl.SSLContext:
    """Make a caller's context fit for HTTP/2 (RFC 9113 §9.2: TLS 1.2 or later, ALPN)."""
    if context.minimum_version < ssl.TLSVersion.TLSv1_2:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    return context


class TLSLayer:
    """One connection's TLS state. ``_lock`` guards the SSLObject and both buffers."""

    def __init__(self, context: ssl.SSLContext, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self._lock = threading.Lock()
        self.server_side = server_side

    def handshake_step(self, data: bytes) -> tuple[bool, bytes]:
        """Feed ``data`` received during the handshake; return whether it is done and
        the bytes to send. ``ssl.SSLError`` if it fails, ``ConnectionError`` unless
        ALPN settled on ``h2``."""
        with self._lock:
            if data:
                self._incoming.write(data)
            try:
                self._ssl.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            output = self._outgoing.read()
        if done:
            protocol = self._ssl.selected_alpn_protocol()
            if protocol != "h2":
                raise ConnectionError(f"TLS peer did not agree to HTTP/2 (ALPN {protocol!r})")
        return done, output

    def encrypt(self, data: bytes) -> bytes:
        """Records for ``data``, plus anything else OpenSSL has queued before them.
        Call under the transport's send lock and send the result before releasing it."""
        with self._lock:
            if data:
                self._ssl.write(data)
            return self._outgoing.read()

    def decrypt(self, data: bytes | memoryview) -> tuple[bytes, bool]:
        """The plaintext in ``data`` (may be empty), and whether OpenSSL now has output
        of its own to send (a TLS 1.3 key update answer, an alert)."""
        chunks = []
        with self._lock:
            self._incoming.write(data)
            while True:
                try:
                    chunk = self._ssl.read(_READ_SIZE)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks), self._outgoing.pending > 0
