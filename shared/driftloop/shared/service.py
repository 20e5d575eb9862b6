"""What every service does the same way at start-up: its store, the specs, its entry point."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from nats.js.errors import KeyNotFoundError, NotFoundError

from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.db import Messaging, SqlUnitOfWork, make_engine, migrate
from driftloop.shared.events import SPECS_BUCKET
from driftloop.shared.spec import ModelSpec
from driftloop.shared.telemetry import configure_logging, configure_tracing

logger = logging.getLogger(__name__)


def open_store(
    settings: Settings, *, service: str, messaging: Messaging, versions: Path
) -> SqlUnitOfWork:
    """The service's engine, migrated to head, wrapped in its unit of work (whose inbox
    `Bus.start_relay` keeps for `settings.inbox_retention_days`)."""
    engine = make_engine(
        settings.database_url_for(service), busy_timeout=settings.sqlite_busy_timeout
    )
    migrate(engine, service=service, versions=versions)
    return SqlUnitOfWork(
        engine,
        service=service,
        messaging=messaging,
        inbox_retention=timedelta(days=settings.inbox_retention_days),
    )


@asynccontextmanager
async def closing(uow: SqlUnitOfWork) -> AsyncIterator[SqlUnitOfWork]:
    """The store, its pooled connections closed when the service stops (a PostgreSQL server
    counts them against `max_connections` until then, however idle)."""
    try:
        yield uow
    finally:
        uow.engine.dispose()


class SpecSource:
    """Model specs from the `driftloop_specs` KV bucket (written by `driftloop apply`)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def get(self, model: str) -> ModelSpec | None:
        kv = await self.bus.kv(SPECS_BUCKET)
        try:
            entry = await kv.get(model)
        except (KeyNotFoundError, NotFoundError):
            return None
        if entry.value is None:
            return None
        return ModelSpec.model_validate_json(entry.value)


def run(
    service: str,
    serve: Callable[[Settings], Coroutine[Any, Any, None]],
    settings: Settings | None = None,
) -> None:
    """Entry point of a service process: logging, tracing, then serve until SIGTERM."""
    settings = settings or Settings()
    configure_logging(settings, service=service)
    provider = configure_tracing(settings, service=service)
    try:
        with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
            runner.run(serve(settings))
    finally:
        provider.shutdown()


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a service runs on (`DRIFTLOOP_EVENT_LOOP`): uvloop's when it is
    installed, unless asyncio's own is asked for (None: asyncio's default). uvloop's sockets,
    timers and callbacks are in C: the same work for less CPU per request and per message
    (docs/benchmarks.md). Asked for by name and not installed: an error that says so."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError(
                "DRIFTLOOP_EVENT_LOOP=uvloop, but uvloop is not installed (pip install uvloop)"
            ) from None
        return None
    return uvloop.new_event_loop
