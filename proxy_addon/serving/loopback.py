"""A server on 127.0.0.1 that a flow is pointed at, with what it is to answer registered under
a one-time token the flow carries in a header.

mitmproxy cannot push a response it made itself in chunks, nor answer a WebSocket upgrade; it
can relay whatever an upstream sends. The pacer and the WebSocket replay server are such
upstreams, inside the addon: the replay hook registers the answer, sets the token header and
points the flow at the server's port (which the connection guard admits in replay mode). This
is what the two share; each speaks its own protocol in ``_serve``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class LoopbackServer[T]:
    """Started on first use, on a free port. ``T``: what one registered answer holds.
    ``on_fault(error)`` is told of a fault while answering (it ends that answer, never the
    proxy), so the run counts it."""

    token_header: str  # the request header a flow carries its token in

    def __init__(self, on_fault: Callable[[Exception], None]) -> None:
        self._on_fault = on_fault
        self._server: asyncio.AbstractServer | None = None
        self._lock = asyncio.Lock()
        self._pending: dict[str, T] = {}
        self.port = 0

    async def ensure_started(self) -> int:
        async with self._lock:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def register(self, item: T) -> str:
        """A token for one connection to be answered with ``item``."""
        token = secrets.token_hex(16)
        self._pending[token] = item
        return token

    def take(self, token: str) -> T | None:
        """What ``token`` was registered for, once (None: unknown, or already served)."""
        return self._pending.pop(token, None)

    def forget(self, token: str) -> None:
        """The flow carrying ``token`` ended without reaching the server (or after it)."""
        self.take(token)

    @property
    def waiting(self) -> int:
        """Tokens registered and not yet served or forgotten."""
        return len(self._pending)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
