"""Whether a request can still be on its way: the batcher's lone request need not wait for
one that cannot come.

HTTP/1.1 carries one request at a time on a connection (uvicorn holds a pipelined one back
until the one before is answered). So when every open connection of this process has a request
inside the application, no other request can reach the batcher before one of them is answered,
and a batch that is forming has nobody left to wait for: at one connection a lone request is
predicted at once rather than after the quiet event-loop turns that let concurrent requests
join (domain/batching.keep_gathering). With connections idle or unknown (no server watched,
as under a test client) nothing changes."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send


class Occupancy:
    """Requests inside the application against the server's open connections."""

    def __init__(self) -> None:
        self.active = 0  # HTTP requests inside the application now
        self.connections: Sized | None = None  # the server's open connections, once watched

    def watch(self, server: Any) -> None:
        """Count the open connections of `server`, a uvicorn.Server (its state's set)."""
        self.connections = server.server_state.connections

    def all_busy(self) -> bool:
        """Whether every open connection has a request inside the application."""
        return self.connections is not None and self.active >= len(self.connections)


class Occupied:
    """ASGI middleware, the outermost: counts the HTTP requests inside the application."""

    def __init__(self, app: ASGIApp, *, occupancy: Occupancy) -> None:
        self.app = app
        self.occupancy = occupancy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.occupancy.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.occupancy.active -= 1
