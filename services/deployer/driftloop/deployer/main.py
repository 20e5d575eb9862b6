"""Deployer entry point: settings -> adapters -> subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from driftloop.deployer import handlers
from driftloop.deployer.adapters.routes import RouteWriter
from driftloop.deployer.adapters.store import SERVICE, VERSIONS, messaging
from driftloop.shared import service
from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import EvaluationPassed
from driftloop.shared.registry import configure_mlflow


def utcnow() -> datetime:
    return datetime.now(UTC)


async def serve(settings: Settings) -> None:
    uow = service.open_store(settings, service=SERVICE, messaging=messaging, versions=VERSIONS)
    client = configure_mlflow(settings)
    async with connect_bus(settings, service=SERVICE) as bus:
        bus.subscribe(
            EvaluationPassed,
            partial(
                handlers.on_evaluation_passed,
                uow=uow,
                specs=service.SpecSource(bus),
                routes=RouteWriter(bus, client),
                now=utcnow,
            ),
        )
        bus.start_relay(uow)
        await bus.run_until_stopped()


def main() -> None:
    service.run(SERVICE, serve)
