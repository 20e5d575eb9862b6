"""A forming batch goes at once when no other request can come: every open connection of the
server already has its request inside the application (HTTP/1.1 carries one at a time). Real
uvicorn on a real socket: the count of open connections is the server's own."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from helpers import eventually

from driftloop.cli.supervisor import free_port
from driftloop.gateway.occupancy import Occupancy, Occupied


def occupied_app(occupancy: Occupancy) -> FastAPI:
    app = FastAPI()

    @app.get("/busy")
    async def busy() -> dict[str, Any]:
        return {"all_busy": occupancy.all_busy(), "active": occupancy.active}

    app.add_middleware(Occupied, occupancy=occupancy)
    return app


async def test_every_connection_busy_only_while_no_other_one_is_open(running: Any) -> None:
    occupancy = Occupancy()
    port = free_port()
    config = uvicorn.Config(occupied_app(occupancy), host="127.0.0.1", port=port, log_config=None)
    server = uvicorn.Server(config)
    occupancy.watch(server)
    running(server.serve())
    await eventually(lambda: server.started, timeout=20, interval=0.05)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:
        alone = (await client.get("/busy")).json()
        _, idle = await asyncio.open_connection("127.0.0.1", port)  # open, sends nothing
        await eventually(lambda: len(server.server_state.connections) == 2, timeout=10)
        beside_an_idle_one = (await client.get("/busy")).json()
        idle.close()
        await idle.wait_closed()
        await eventually(lambda: len(server.server_state.connections) == 1, timeout=10)
        alone_again = (await client.get("/busy")).json()

    assert alone == {"all_busy": True, "active": 1}
    assert beside_an_idle_one == {"all_busy": False, "active": 1}
    assert alone_again == {"all_busy": True, "active": 1}
    assert occupancy.active == 0  # every request counted out, answered


async def test_nothing_is_known_busy_without_a_watched_server() -> None:
    occupancy = Occupancy()
    transport = httpx.ASGITransport(app=occupied_app(occupancy))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        answer = (await client.get("/busy")).json()

    assert answer == {"all_busy": False, "active": 1}
