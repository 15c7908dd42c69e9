"""TLS for Triple connections (HTTP/2 over TLS, ALPN ``h2``).

A connection is read by its I/O loop while other threads write to it, and OpenSSL
must not be used by two threads at once, so a TLS connection is not an ``SSLSocket``:
OpenSSL runs on memory buffers (``ssl.SSLObject`` over two ``MemoryBIO``\\s) under
``_lock``, and socket I/O happens outside it. Encrypted output is taken from the
buffer only under the transport's send lock, so TLS records reach the socket in the
order OpenSSL made them.

``TLSLayer.auth_context()`` describes the peer the way grpcio's
``ServicerContext.auth_context()`` does (gRPC core's property names and formats), so
servicer code that authorizes callers by their client certificate ports unchanged.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["INSECURE_AUTH_CONTEXT", "TLSLayer", "auth_properties", "client_context",
           "server_context"]

_READ_SIZE = 256 * 1024

# What grpcio's auth_context() holds for a plaintext call.
INSECURE_AUTH_CONTEXT: dict[str, list[bytes]] = {
    "transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}


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
    if context.protocol is not ssl.PROTOCOL_TLS_CLIENT and \
            not getattr(context.sni_callback, "records_server_name", False):
        context.sni_callback = _recording_server_name(context.sni_callback)
    return context


def _recording_server_name(callback: Callable[..., Any] | None) -> Callable[..., Any]:
    """An SNI callback that notes the name the client asked for on its ``SSLObject``
    (grpcio reports it as ``ssl_requested_server_name``), then runs ``callback``."""
    def sni_callback(ssl_object: Any, server_name: str | None,
                     context: ssl.SSLContext) -> Any:
        ssl_object.dubbo_server_name = server_name
        return None if callback is None else callback(ssl_object, server_name, context)

    sni_callback.records_server_name = True  # type: ignore[attr-defined]
    return sni_callback


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
        # Built on first use after the handshake; guarded by _lock.
        self._auth: tuple[dict[str, list[bytes]], str | None] | None = None

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

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER) once the handshake is done; ``None`` before it, or
        when the peer sent none (a server asks only if its context has ``verify_mode``
        set, as ``server_context(cafile=...)`` does; OpenSSL has then verified it)."""
        with self._lock:
            if self._ssl.version() is None:
                return None
            return self._ssl.getpeercert(binary_form=True)

    def auth_context(self) -> tuple[dict[str, list[bytes]], str | None]:
        """grpcio's auth context for this connection and the name of the property that
        holds the peer's identity (``None`` without a client certificate). The dict
        is the caller's to keep."""
        with self._lock:
            built = self._auth
            if built is None:
                version = self._ssl.version()
                if version is None:  # handshake not done: nothing to describe yet
                    return {"transport_security_type": [b"ssl"]}, None
                certificate = self._ssl.getpeercert(binary_form=True)
                reused = self._ssl.session_reused
                server_name = getattr(self._ssl, "dubbo_server_name", None)
        if built is None:  # parsed outside the lock, which encrypt/decrypt need
            assert version is not None  # returned above otherwise
            built = auth_properties(certificate, tls_version=version, session_reused=reused,
                                    server_name=server_name)
            with self._lock:
                self._auth = built
        properties, identity_key = built
        return {name: list(values) for name, values in properties.items()}, identity_key


def auth_properties(certificate: bytes | None, *, tls_version: str, session_reused: bool,
                    server_name: str | None = None
                    ) -> tuple[dict[str, list[bytes]], str | None]:
    """gRPC core's auth properties for a TLS peer with ``certificate`` (DER, or ``None``),
    and the identity property: the subject alternative names if there are any, else the
    common name (empty if the subject has none), as grpcio chooses."""
    properties: dict[str, list[bytes]] = {"transport_security_type": [b"ssl"]}

    def add(name: str, value: bytes) -> None:
        properties.setdefault(name, []).append(value)

    identity_key = None
    if certificate is not None:
        subject, alt_names = _subject_and_alt_names(certificate)
        add("x509_subject", _rfc2253(certificate, subject).encode())
        common_name = next((value for oid, value in (ava for rdn in subject for ava in rdn)
                            if oid == _COMMON_NAME), None)
        add("x509_common_name", b"" if common_name is None else
            _text(certificate, common_name).encode())
        identity_key = "x509_common_name"
        add("x509_pem_cert", ssl.DER_cert_to_PEM_cert(certificate).encode())
        uris = []
        for tag, start, end in alt_names:
            identity_key = "x509_subject_alternative_name"
            if tag in _IA5_ALT_NAMES:  # the value's bytes, each read as Latin-1 (IA5)
                value = certificate[start:end].decode("latin-1").encode()
                add("x509_subject_alternative_name", value)
                add(_IA5_ALT_NAMES[tag], value)
                if tag == 0x86:
                    uris.append(value)
            elif tag == 0x87 and end - start in (4, 16):  # iPAddress, as inet_ntop prints it
                family = socket.AF_INET if end - start == 4 else socket.AF_INET6
                value = socket.inet_ntop(family, certificate[start:end]).encode()
                add("x509_subject_alternative_name", value)
                add("peer_ip", value)
            elif tag != 0x87:  # gRPC core rejects an address of any other length
                add("x509_subject_alternative_name", b"other types of SAN")
        if len(uris) == 1 and _is_spiffe_id(uris[0]):
            add("peer_spiffe_id", uris[0])
    add("security_level", b"TSI_PRIVACY_AND_INTEGRITY")
    add("ssl_session_reused", b"true" if session_reused else b"false")
    add("ssl_tls_version", tls_version.encode())
    if server_name:
        add("ssl_requested_server_name", server_name.encode())
    return properties, identity_key


def _is_spiffe_id(uri: bytes) -> bool:
    """gRPC core's check: ``spiffe://<trust domain up to 255>/<non-empty path>``."""
    parts = uri.split(b"/")
    return (uri.startswith(b"spiffe://") and len(uri) <= 2048 and len(parts) >= 4
            and bool(parts[3]) and len(parts[2]) <= 255)


# --- Reading the certificate (DER, already verified by OpenSSL) ---

_Item = tuple[int, int, int, int]  # tag, start of the item, start and end of its contents

_COMMON_NAME = "2.5.4.3"
_SUBJECT_ALT_NAME = bytes([0x55, 0x1D, 0x11])  # 2.5.29.17
_IA5_ALT_NAMES = {0x81: "peer_email", 0x82: "peer_dns", 0x86: "peer_uri"}
# How BoringSSL (grpcio's TLS) reads each string type: the one-byte types as Latin-1.
_CHARSETS = {0x0C: "utf-8", 0x12: "latin-1", 0x13: "latin-1", 0x14: "latin-1",
             0x16: "latin-1", 0x17: "latin-1", 0x18: "latin-1", 0x1A: "latin-1",
             0x1C: "utf-32-be", 0x1E: "utf-16-be"}
# The attribute names BoringSSL prints; it prints any other OID dotted, with a #hex value.
_SHORT_NAMES = {f"2.5.4.{number}": name for number, name in (
    (3, "CN"), (4, "SN"), (5, "serialNumber"), (6, "C"), (7, "L"), (8, "ST"), (9, "street"),
    (10, "O"), (11, "OU"), (12, "title"), (13, "description"), (14, "searchGuide"),
    (15, "businessCategory"), (16, "postalAddress"), (17, "postalCode"),
    (18, "postOfficeBox"), (19, "physicalDeliveryOfficeName"), (20, "telephoneNumber"),
    (21, "telexNumber"), (22, "teletexTerminalIdentifier"),
    (23, "facsimileTelephoneNumber"), (24, "x121Address"), (25, "internationaliSDNNumber"),
    (26, "registeredAddress"), (27, "destinationIndicator"),
    (28, "preferredDeliveryMethod"), (29, "presentationAddress"),
    (30, "supportedApplicationContext"), (31, "member"), (32, "owner"),
    (33, "roleOccupant"), (34, "seeAlso"), (35, "userPassword"), (36, "userCertificate"),
    (37, "cACertificate"), (38, "authorityRevocationList"),
    (39, "certificateRevocationList"), (40, "crossCertificatePair"), (41, "name"),
    (42, "GN"), (43, "initials"), (44, "generationQualifier"), (45, "x500UniqueIdentifier"),
    (46, "dnQualifier"), (47, "enhancedSearchGuide"), (48, "protocolInformation"),
    (49, "distinguishedName"), (50, "uniqueMember"), (51, "houseIdentifier"),
    (52, "supportedAlgorithms"), (53, "deltaRevocationList"), (54, "dmdName"),
    (65, "pseudonym"), (72, "role"))}
_SHORT_NAMES.update({
    "1.2.840.113549.1.9.1": "emailAddress", "1.2.840.113549.1.9.2": "unstructuredName",
    "1.2.840.113549.1.9.8": "unstructuredAddress", "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.3": "mail", "0.9.2342.19200300.100.1.25": "DC"})


def _items(der: bytes, start: int, end: int) -> Iterator[_Item]:
    """The DER items laid end to end in ``der[start:end]``."""
    while start < end:
        tag, length, head = der[start], der[start + 1], start + 2
        if length & 0x80:
            length, head = int.from_bytes(der[head:head + (length & 0x7F)], "big"), \
                head + (length & 0x7F)
        if head + length > end:
            raise ValueError("truncated DER")
        yield tag, start, head, head + length
        start = head + length


def _inside(der: bytes, item: _Item) -> list[_Item]:
    return list(_items(der, item[2], item[3]))


def _subject_and_alt_names(der: bytes) -> tuple[list[list[tuple[str, _Item]]],
                                                 list[tuple[int, int, int]]]:
    """The subject as RDNs of (OID, value item), in certificate order, and the subject
    alternative names as (tag, start, end of the value)."""
    tbs = _inside(der, next(_items(der, 0, len(der))))[0]
    fields = _inside(der, tbs)
    if fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    subject = []
    for rdn in _inside(der, fields[4]):
        attributes = [_inside(der, attribute) for attribute in _inside(der, rdn)]
        subject.append([(_oid(der, oid), value) for oid, value in attributes])
    alt_names: list[tuple[int, int, int]] = []
    for field in fields[6:]:
        if field[0] != 0xA3:  # [3] extensions
            continue
        for extension in _inside(der, _inside(der, field)[0]):
            parts = _inside(der, extension)  # extnID, critical?, extnValue
            if der[parts[0][2]:parts[0][3]] == _SUBJECT_ALT_NAME:
                names = next(_items(der, parts[-1][2], parts[-1][3]))
                alt_names = [(tag, start, end) for tag, _, start, end in _inside(der, names)]
    return subject, alt_names


def _oid(der: bytes, item: _Item) -> str:
    arcs, value = [], 0
    for byte in der[item[2]:item[3]]:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    top = min(arcs[0] // 40, 2)
    return ".".join(map(str, [top, arcs[0] - 40 * top, *arcs[1:]]))


def _text(der: bytes, item: _Item) -> str:
    """A string value, decoded as BoringSSL's ``ASN1_STRING_to_UTF8`` reads it."""
    return der[item[2]:item[3]].decode(_CHARSETS.get(item[0], "latin-1"), errors="replace")


def _rfc2253(der: bytes, subject: list[list[tuple[str, _Item]]]) -> str:
    """The subject as BoringSSL's ``X509_NAME_print_ex(..., XN_FLAG_RFC2253)`` prints it
    (gRPC core's ``x509_subject``): last attribute first, ``+`` inside an RDN, RFC 2253
    escapes, control and non-ASCII bytes as ``\\XX``, unknown OIDs and non-string
    values as ``#`` and the hex of their DER."""
    entries = [(index, oid, value) for index, rdn in enumerate(subject) for oid, value in rdn]
    out, previous = [], None
    for index, oid, value in reversed(entries):
        if previous is not None:
            out.append("+" if index == previous else ",")
        previous = index
        name = _SHORT_NAMES.get(oid)
        if name is None or value[0] not in _CHARSETS:
            out.append(f"{name or oid}=#{der[value[1]:value[3]].hex().upper()}")
        else:
            out.append(f"{name}={_escape_2253(_text(der, value))}")
    return "".join(out)


def _escape_2253(text: str) -> str:
    data = text.encode()
    out = []
    for position, byte in enumerate(data):
        char = chr(byte)
        if byte < 0x20 or byte >= 0x7F:
            out.append(f"\\{byte:02X}")
        elif char in '\\",+<>;' or (position == 0 and char in " #") or \
                (position == len(data) - 1 and char == " "):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)
