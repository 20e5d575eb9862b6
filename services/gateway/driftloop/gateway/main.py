"""Gateway entry point: settings -> app -> uvicorn."""

from __future__ import annotations

import asyncio

import uvicorn
from threadpoolctl import threadpool_limits

from driftloop.gateway.app import create_app
from driftloop.gateway.config import GatewaySettings
from driftloop.gateway.spools import WorkerSlot
from driftloop.shared import service
from driftloop.shared.config import Settings
from driftloop.shared.telemetry import configure_logging


async def serve(settings: Settings, worker: WorkerSlot | None = None) -> None:
    """One gateway process; `worker`: one of several on the port (workers.py), which binds
    its own SO_REUSEPORT socket rather than let uvicorn bind one."""
    # Requests are the gateway's parallelism: a model's own OpenMP/BLAS threads on small
    # batches only add overhead, and on a busy machine their spinning stalls every request.
    threadpool_limits(limits=1)
    app = create_app(settings, worker=worker)
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    app.state.occupancy.watch(server)  # a lone request's batch need not wait (occupancy.py)
    if worker is None or not worker.multiprocess:
        await server.serve()
        return
    from driftloop.gateway.workers import reuseport_socket

    sock = reuseport_socket(settings.gateway_host, settings.gateway_port)
    await server.serve(sockets=[sock])


def main() -> None:
    settings = GatewaySettings()
    if settings.worker_count() == 1:
        service.run("gateway", serve, settings)  # one process, as ever
        return
    from driftloop.gateway.workers import supervise

    configure_logging(settings, service="gateway")
    supervise(settings)


if __name__ == "__main__":
    asyncio.run(serve(GatewaySettings()))
