"""The call context a handler receives as its optional second argument.

Method names follow grpcio's ``ServicerContext`` so servicer code ports unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from ..status import Details, RpcError, StatusCode
from ..transport.tls import INSECURE_AUTH_CONTEXT
from ..wire.compression import codec_name
from ..wire.metadata import MetadataLike

if TYPE_CHECKING:  # pragma: no cover
    from ..transport.tls import TLSLayer
    from ..wire.deadline import Deadline
    from ..wire.metadata import RequestHead

__all__ = ["ContextCall", "ServicerContext"]


class _Peer(Protocol):
    @property
    def peer(self) -> str: ...
    @property
    def tls(self) -> TLSLayer | None: ...


class ContextCall(Protocol):
    """What a context uses of its call: a ``ServerCall``, or a plain-HTTP call
    (``dubbo.server.http_unary.HttpCall``, HTTP/1.1)."""

    @property
    def head(self) -> RequestHead: ...
    @property
    def deadline(self) -> Deadline | None: ...
    @property
    def transport(self) -> _Peer: ...
    @property
    def final_status(self) -> tuple[StatusCode, str] | None: ...
    def is_active(self) -> bool: ...
    def add_callback(self, callback: Callable[[], Any]) -> bool: ...
    def send_initial_metadata(self, metadata: MetadataLike) -> None: ...
    def set_trailing_metadata(self, metadata: MetadataLike) -> None: ...
    def set_compression(self, name: str | None) -> None: ...
    def cancel_locally(self) -> None: ...


def _status_code(code: Any) -> StatusCode:
    """Our StatusCode from ours, an int, or grpcio's enum (whose value is (int, str))."""
    value = getattr(code, "value", code)
    if isinstance(value, tuple):
        value = value[0]
    return StatusCode(int(value))


class ServicerContext:
    """``code`` and ``details`` are what ``set_code``/``set_details`` set: the status of
    a normal return. Once set, both are also callable (``context.code()``,
    ``context.details()``, grpcio's spelling); ``code`` is ``None`` until set."""

    __slots__ = ("_call", "code", "details")

    def __init__(self, call: ContextCall) -> None:
        self._call = call
        self.code: StatusCode | None = None  # set_code(): the status of a normal return
        self.details: Details = Details()

    def invocation_metadata(self) -> list[tuple[str, str | bytes]]:
        """The request's metadata: str values, bytes for ``-bin`` keys."""
        return list(self._call.head.metadata)

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline, or ``None`` without one."""
        deadline = self._call.deadline
        return None if deadline is None else deadline.remaining()

    def is_active(self) -> bool:
        """False once the client cancelled, went away or the deadline passed."""
        return self._call.is_active()

    def peer(self) -> str:
        return self._call.transport.peer

    def auth_context(self) -> dict[str, list[bytes]]:
        """What the connection proves about the caller, as grpcio reports it: for TLS
        ``transport_security_type`` ``[b"ssl"]`` and, with a client certificate,
        ``x509_common_name``, ``x509_subject_alternative_name``, ``x509_subject``,
        ``x509_pem_cert``, ``peer_dns``/``peer_ip``/``peer_uri``/``peer_email``; for
        plaintext ``[b"insecure"]``."""
        tls = self._call.transport.tls
        if tls is None:
            return {name: list(values) for name, values in INSECURE_AUTH_CONTEXT.items()}
        return tls.auth_context()[0]

    def peer_identity_key(self) -> str | None:
        """``"x509_subject_alternative_name"`` if the client certificate has any, else
        ``"x509_common_name"``; ``None`` without a client certificate."""
        tls = self._call.transport.tls
        return None if tls is None else tls.auth_context()[1]

    def peer_identities(self) -> list[bytes] | None:
        """The caller's verified identities (``auth_context()[peer_identity_key()]``),
        or ``None`` without a client certificate."""
        tls = self._call.transport.tls
        if tls is None:
            return None
        properties, key = tls.auth_context()
        return None if key is None else properties[key]

    def method(self) -> str:
        """The ``/service/method`` path of this call."""
        return self._call.head.path

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        """Run ``callback()`` when the call ends, however it ends."""
        return self._call.add_callback(callback)

    def final_status(self) -> tuple[StatusCode, str] | None:
        """The status the call ended with (sent, or the client's cancel), for
        interceptors' add_callback functions; None while it runs."""
        return self._call.final_status

    def send_initial_metadata(self, metadata: MetadataLike) -> None:
        self._call.send_initial_metadata(metadata)

    def set_trailing_metadata(self, metadata: MetadataLike) -> None:
        self._call.set_trailing_metadata(metadata)

    def set_code(self, code: Any) -> None:
        """The status the call ends with when the handler returns; ours, an int, or a
        ``grpc.StatusCode``. (Handlers added through ``add_generic_rpc_handlers`` also
        end with it when they raise, as in grpcio.)"""
        self.code = _status_code(code)

    def set_details(self, details: str | None) -> None:
        self.details = Details(details or "")

    def abort(self, code: Any, details: str = "") -> NoReturn:
        """End the call with ``code`` and ``details``; raises, never returns.

        ``code`` may be a ``StatusCode``, an int, or a ``grpc.StatusCode``.
        """
        status = _status_code(code)
        if status == StatusCode.OK:
            raise ValueError("abort() needs a non-OK status code")
        raise RpcError(status, details)

    def abort_with_status(self, status: Any) -> NoReturn:
        """grpcio's form: ``status`` has ``code``, ``details`` and ``trailing_metadata``
        (e.g. from ``grpc_status.rpc_status.to_status``, carrying
        ``grpc-status-details-bin``)."""
        raise RpcError(_status_code(status.code), status.details or "",
                       getattr(status, "trailing_metadata", None) or ())

    def set_compression(self, name: str | None) -> None:
        """Compress this call's replies with ``name`` ("gzip", "deflate", ...) if the
        client accepts it; must come before the first reply."""
        self._call.set_compression(codec_name(name))

    def cancel(self) -> None:
        """Cancel the call from the server side (RST_STREAM CANCEL)."""
        self._call.cancel_locally()
