"""Gateway entry point: settings -> app -> uvicorn."""

from __future__ import annotations

import asyncio

import uvicorn
from threadpoolctl import threadpool_limits

from driftloop.gateway.app import create_app
from driftloop.gateway.config import GatewaySettings
from driftloop.shared import service
from driftloop.shared.config import Settings


async def serve(settings: Settings) -> None:
    # Requests are the gateway's parallelism: a model's own OpenMP/BLAS threads on small
    # batches only add overhead, and on a busy machine their spinning stalls every request.
    threadpool_limits(limits=1)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    await uvicorn.Server(config).serve()


def main() -> None:
    service.run("gateway", serve, GatewaySettings())


if __name__ == "__main__":
    asyncio.run(serve(GatewaySettings()))
