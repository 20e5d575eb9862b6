"""Trainer entry point: settings -> adapters -> subscriptions."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

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
from driftloop.trainer.adapters.progress import STATUS_SUBJECT, WaitBoard
from driftloop.trainer.adapters.registry import TrainerRegistry
from driftloop.trainer.adapters.store import SERVICE, VERSIONS, messaging
from driftloop.trainer.adapters.worker import TrainingWorkers


def utcnow() -> datetime:
    return datetime.now(UTC)


async def serve(settings: Settings) -> None:
    registry = TrainerRegistry(await asyncio.to_thread(configure_mlflow, settings), settings)
    workers = TrainingWorkers(threads=settings.training_threads)
    waits = WaitBoard()
    warming = asyncio.create_task(workers.warm())  # the workers' imports, off the start-up path
    # no await between opening the store and `closing` it: a cancel cannot leak its pool
    uow = service.open_store(settings, service=SERVICE, messaging=messaging, versions=VERSIONS)
    async with service.closing(uow), connect_bus(settings, service=SERVICE) as bus:
        specs = service.SpecSource(bus)
        bus.subscribe_records(
            PREDICTIONS_STREAM,
            "driftloop.predictions.*",  # served answers: a shadow's copies are not samples
            PredictionBatch,
            partial(handlers.on_predictions, uow=uow),
            durable="predictions",
            many=partial(handlers.on_all_predictions, uow=uow),
        )
        bus.subscribe_records(
            FEEDBACK_STREAM,
            "driftloop.feedback.>",
            FeedbackBatch,
            partial(handlers.on_feedback, uow=uow),
            durable="feedback",
            many=partial(handlers.on_all_feedback, uow=uow),
        )
        bus.subscribe(
            RetrainRequested,
            partial(
                handlers.on_retrain_requested,
                uow=uow,
                specs=specs,
                registry=registry,
                workers=workers,
                now=utcnow,
                waits=waits,
            ),
            max_deliver=1000,
        )

        async def answer_status(data: bytes) -> dict[str, Any]:
            model = json.loads(data or b"{}").get("model")
            stale = timedelta(seconds=30)  # many polls missed: the trainer is not waiting
            return waits.status(str(model) if model else None, now=utcnow(), max_age=stale)

        await bus.respond(STATUS_SUBJECT, answer_status)
        bus.start_relay(uow)
        try:
            await bus.run_until_stopped()
        finally:
            warming.cancel()


def main() -> None:
    service.run(SERVICE, serve)
