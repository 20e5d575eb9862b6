"""Deployer entry point: settings -> adapters -> subscriptions, the analysis timer and the
control subject the CLI's approve/rollback/promote/pause/resume commands use."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from driftloop.deployer.adapters.observer import MonitorStats
from driftloop.deployer.adapters.routes import RouteWriter
from driftloop.deployer.adapters.store import SERVICE, VERSIONS, messaging
from driftloop.deployer.handlers import Deployer
from driftloop.deployer.metrics import deployer_collector
from driftloop.shared import service
from driftloop.shared.auth import TokenSet
from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import DEPLOYER_CONTROL, DEPLOYER_STATUS, EvaluationPassed
from driftloop.shared.registry import configure_mlflow
from driftloop.shared.routes import Served

LOOK_EVERY = 1.0  # seconds between two analyses of the running rollouts


def utcnow() -> datetime:
    return datetime.now(UTC)


def registered(client: MlflowClient) -> Any:
    def lookup(model: str, version: str) -> Served | None:
        try:
            found = client.get_model_version(model, version)
        except MlflowException:
            return None
        return Served(version=str(found.version), run_id=str(found.run_id))

    return lookup


async def serve(settings: Settings, *, look_every: float = LOOK_EVERY) -> None:
    client = await asyncio.to_thread(configure_mlflow, settings)  # may create its tables
    # no await between opening the store and `closing` it: a cancel cannot leak its pool
    uow = service.open_store(settings, service=SERVICE, messaging=messaging, versions=VERSIONS)
    async with service.closing(uow), connect_bus(settings, service=SERVICE) as bus:
        bus.metrics.register(deployer_collector(uow.engine))
        deployer = Deployer(
            uow=uow,
            specs=service.SpecSource(bus),
            routes=RouteWriter(bus, client),
            stats=MonitorStats(bus),
            now=utcnow,
            versions=registered(client),
            tokens=TokenSet(settings.api_tokens),
        )
        bus.subscribe(EvaluationPassed, deployer.on_evaluation_passed)

        async def control(data: bytes) -> dict[str, Any]:
            return await deployer.control(json.loads(data or b"{}"))

        async def status(data: bytes) -> dict[str, Any]:
            return await deployer.status(str(json.loads(data or b"{}").get("model", "")))

        await bus.respond(DEPLOYER_CONTROL, control)
        await bus.respond(DEPLOYER_STATUS, status)
        bus.start_relay(uow)
        timer = asyncio.create_task(deployer.run_timer(look_every))
        try:
            await bus.run_until_stopped()
        finally:
            timer.cancel()


def main() -> None:
    service.run(SERVICE, serve)
