"""Evaluator entry point: settings -> adapters -> subscriptions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import partial

from driftloop.evaluator import handlers
from driftloop.evaluator.adapters.store import SERVICE, VERSIONS, messaging
from driftloop.evaluator.metrics import evaluator_collector
from driftloop.shared import service
from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import ModelTrained
from driftloop.shared.registry import configure_mlflow


def utcnow() -> datetime:
    return datetime.now(UTC)


async def serve(settings: Settings) -> None:
    client = await asyncio.to_thread(configure_mlflow, settings)  # may create its tables
    # no await between opening the store and `closing` it: a cancel cannot leak its pool
    uow = service.open_store(settings, service=SERVICE, messaging=messaging, versions=VERSIONS)
    async with service.closing(uow), connect_bus(settings, service=SERVICE) as bus:
        bus.metrics.register(evaluator_collector(uow.engine))
        bus.subscribe(
            ModelTrained,
            partial(
                handlers.on_model_trained,
                uow=uow,
                specs=service.SpecSource(bus),
                client=client,
                now=utcnow,
            ),
        )
        bus.start_relay(uow)
        await bus.run_until_stopped()


def main() -> None:
    service.run(SERVICE, serve)
