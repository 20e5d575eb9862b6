"""Trainer entry point: settings -> adapters -> subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from driftloop.shared import service
from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import (
    FEEDBACK_STREAM,
    PREDICTIONS_STREAM,
    FeedbackBatch,
    PredictionBatch,
    RetrainRequested,
)
from driftloop.shared.registry import configure_mlflow
from driftloop.trainer import handlers
from driftloop.trainer.adapters.registry import TrainerRegistry
from driftloop.trainer.adapters.store import SERVICE, VERSIONS, messaging


def utcnow() -> datetime:
    return datetime.now(UTC)


async def serve(settings: Settings) -> None:
    uow = service.open_store(settings, service=SERVICE, messaging=messaging, versions=VERSIONS)
    registry = TrainerRegistry(configure_mlflow(settings), settings)
    async with connect_bus(settings, service=SERVICE) as bus:
        specs = service.SpecSource(bus)
        bus.subscribe_records(
            PREDICTIONS_STREAM,
            "driftloop.predictions.>",
            PredictionBatch,
            partial(handlers.on_predictions, uow=uow),
            durable="predictions",
        )
        bus.subscribe_records(
            FEEDBACK_STREAM,
            "driftloop.feedback.>",
            FeedbackBatch,
            partial(handlers.on_feedback, uow=uow),
            durable="feedback",
        )
        bus.subscribe(
            RetrainRequested,
            partial(
                handlers.on_retrain_requested, uow=uow, specs=specs, registry=registry, now=utcnow
            ),
            max_deliver=1000,
            ack_wait=120.0,
        )
        bus.start_relay(uow)
        await bus.run_until_stopped()


def main() -> None:
    service.run(SERVICE, serve)
