"""Service-side handler declarations (kept at this path for apache-dubbo compatibility)."""

from .handlers import CallType, RpcMethodHandler, RpcServiceHandler

__all__ = ["CallType", "RpcMethodHandler", "RpcServiceHandler"]
