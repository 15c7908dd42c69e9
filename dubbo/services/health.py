"""``grpc.health.v1.Health``: what load balancers, Kubernetes probes and
grpc_health_probe ask a server. Every ``dubbo.Server`` serves it as ``server.health``.

Semantics follow grpcio's ``grpc_health.v1.health.HealthServicer``: ``""`` is the
server as a whole; Check on an unknown service fails with NOT_FOUND, Watch answers
SERVICE_UNKNOWN and stays open; after ``enter_graceful_shutdown()`` every service is
NOT_SERVING for good.

A Watch holds a worker thread for as long as it is open. How many a peer can open is
bounded by the server's per-call limits: ``max_concurrent_streams`` (100) and
``max_calls_per_connection`` per connection, ``max_connections`` connections,
``max_workers``/``max_pending_calls`` in all. Each Watch ends when the client cancels,
its deadline passes, or the server stops (after a last NOT_SERVING), so none
outlives ``stop()``'s grace period.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator
from typing import Any

from ..proxy.handlers import RpcMethodHandler, RpcServiceHandler
from ..status import RpcError, StatusCode
from ._protobuf import message_class

__all__ = ["MESSAGES", "OVERALL", "SERVICE_NAME", "HealthServicer", "ServingStatus", "check",
           "watch"]

SERVICE_NAME = "grpc.health.v1.Health"
OVERALL = ""  # the service name that stands for the whole server
MAX_LIST = 100  # List answers RESOURCE_EXHAUSTED beyond this many services (health.proto)
# A Watch re-checks that its call is alive this often even if no wake-up reaches it.
WATCH_RECHECK = 5.0

_REQUEST = "grpc.health.v1.HealthCheckRequest"
_RESPONSE = "grpc.health.v1.HealthCheckResponse"
# The message classes, as attributes of this module made on first use:
# ``from dubbo.services.health import HealthCheckRequest``.
MESSAGES = ("HealthCheckRequest", "HealthCheckResponse", "HealthListRequest",
            "HealthListResponse")


def __getattr__(name: str) -> Any:
    if name in MESSAGES:
        return message_class(f"grpc.health.v1.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ServingStatus(enum.IntEnum):
    """``HealthCheckResponse.ServingStatus``, with the same numbers."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3  # Watch only: no such service (yet)


def serving_status(status: ServingStatus | str | int) -> ServingStatus:
    """``status`` as a ServingStatus: the enum, its name ("SERVING", any case) or its
    number (so grpcio's ``health_pb2.HealthCheckResponse.SERVING`` works too)."""
    if isinstance(status, str):
        try:
            return ServingStatus[status.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown serving status {status!r}; one of "
                             f"{', '.join(s.name for s in ServingStatus)}") from None
    return ServingStatus(int(status))


class HealthServicer:
    """The serving status of each service, answered to Check, List and Watch."""

    def __init__(self) -> None:
        # guards _statuses and _shut_down; notified on every change, and when a
        # Watch's call ends, so each Watch looks again.
        self._changed = threading.Condition()
        self._statuses: dict[str, ServingStatus] = {}
        self._shut_down = False

    def set(self, service: str, status: ServingStatus | str | int) -> None:
        """Set ``service``'s status (``""``: the whole server); Watch calls on it hear
        of the change. Ignored once ``enter_graceful_shutdown()`` was called."""
        value = serving_status(status)
        with self._changed:
            if self._shut_down:
                return
            self._statuses[service] = value
            self._changed.notify_all()

    def get(self, service: str) -> ServingStatus | None:
        """``service``'s status, or None if it has none."""
        with self._changed:
            return self._statuses.get(service)

    def clear(self, service: str) -> None:
        """Forget ``service``: Check answers NOT_FOUND, Watch SERVICE_UNKNOWN."""
        with self._changed:
            if self._shut_down:
                return
            self._statuses.pop(service, None)
            self._changed.notify_all()

    def set_default(self, services: list[str]) -> None:
        """SERVING for the server (``""``) and each of ``services`` that has no status
        yet (one set before ``start()`` stays)."""
        with self._changed:
            if self._shut_down:
                return
            for service in [OVERALL, *services]:
                self._statuses.setdefault(service, ServingStatus.SERVING)
            self._changed.notify_all()

    def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for every service, for good (``set()`` is ignored after):
        ``Server.stop()`` calls it before draining, so probes stop sending traffic.
        Each Watch sends NOT_SERVING and ends."""
        with self._changed:
            if self._shut_down:
                return
            for service in self._statuses:
                self._statuses[service] = ServingStatus.NOT_SERVING
            self._shut_down = True
            self._changed.notify_all()

    # -- the RPCs ------------------------------------------------------------------

    def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 (the RPC's name)
        status = self.get(request.service)
        if status is None:
            raise RpcError(StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return message_class(_RESPONSE)(status=int(status))

    def List(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self._changed:
            statuses = dict(self._statuses)
        if len(statuses) > MAX_LIST:
            raise RpcError(StatusCode.RESOURCE_EXHAUSTED,
                           f"{len(statuses)} services, more than List returns ({MAX_LIST})")
        response_class = message_class("grpc.health.v1.HealthListResponse")
        response = response_class()
        for service, status in statuses.items():
            response.statuses[service].status = int(status)
        return response

    def Watch(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802
        """The status now, then each change (the latest one, if several came
        quickly), until the call ends or the server shuts down."""
        service = request.service
        response_class = message_class(_RESPONSE)
        ended = False

        def call_ended() -> None:
            nonlocal ended
            with self._changed:
                ended = True
                self._changed.notify_all()

        if not context.add_callback(call_ended):
            return
        sent: ServingStatus | None = None
        while True:
            with self._changed:
                while True:
                    if ended or not context.is_active():
                        return
                    status = self._statuses.get(service, ServingStatus.SERVICE_UNKNOWN)
                    if status != sent:
                        break
                    if self._shut_down:
                        return  # the last status (NOT_SERVING) went out
                    self._changed.wait(WATCH_RECHECK)
            sent = status
            yield response_class(status=int(status))

    def service_handler(self) -> RpcServiceHandler:
        """``grpc.health.v1.Health`` as an RpcServiceHandler."""
        request = _deserializer(_REQUEST)
        return RpcServiceHandler(SERVICE_NAME, [
            RpcMethodHandler.unary(self.Check, "Check", request, _serialize),
            RpcMethodHandler.unary(self.List, "List",
                                   _deserializer("grpc.health.v1.HealthListRequest"),
                                   _serialize),
            RpcMethodHandler.server_stream(self.Watch, "Watch", request, _serialize),
        ])


def check(client: Any, service: str = OVERALL, timeout: float | None = 5.0) -> ServingStatus:
    """Ask a server how ``service`` is (``""``: the whole server) over ``client``, a
    ``dubbo.Client`` for ``grpc.health.v1.Health``. Raises RpcError (NOT_FOUND for a
    service the server does not know)."""
    call = client.unary("Check", _serialize, _deserializer(_RESPONSE))
    return ServingStatus(call(message_class(_REQUEST)(service=service), timeout=timeout).status)


def watch(client: Any, service: str = OVERALL,
          timeout: float | None = None) -> Iterator[ServingStatus]:
    """``service``'s status now and on each change, until the server ends the call
    (it stops) or ``timeout`` passes (then RpcError DEADLINE_EXCEEDED)."""
    call = client.server_stream("Watch", _serialize, _deserializer(_RESPONSE))
    for response in call(message_class(_REQUEST)(service=service), timeout=timeout):
        yield ServingStatus(response.status)


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _deserializer(full_name: str) -> Any:
    def deserialize(data: bytes) -> Any:
        return message_class(full_name).FromString(data)
    return deserialize
