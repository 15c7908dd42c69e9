"""The server: ``Server`` accepts connections and runs each call's handler on a worker
thread; ``context`` is what a handler sees of its call; ``workers`` the thread pool."""

from .context import ServicerContext
from .server import Server

__all__ = ["Server", "ServicerContext"]
