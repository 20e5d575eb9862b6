"""Monitor entry point: settings -> adapters -> subscriptions."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any

from driftloop.monitor import handlers
from driftloop.monitor.adapters.specs import CachedSpecSource
from driftloop.monitor.adapters.store import SERVICE, VERSIONS, Profiles, messaging
from driftloop.monitor.alerts import AlertWorker, alerting
from driftloop.monitor.metrics import monitor_collector
from driftloop.shared import service
from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.db import SqlUnitOfWork
from driftloop.shared.events import (
    FEEDBACK_STREAM,
    PREDICTIONS_STREAM,
    AdaptationStalled,
    ApprovalRequired,
    DataRejected,
    Deployed,
    DriftDetected,
    EvaluationFailed,
    EvaluationPassed,
    FeedbackBatch,
    PerformanceDegraded,
    PredictionBatch,
    RetrainRequested,
    RolledBack,
    TrainingFailed,
)
from driftloop.shared.registry import configure_mlflow

logger = logging.getLogger(__name__)
SCHEDULE_TICK_SECONDS = 30.0
UPKEEP_TICK_SECONDS = 5.0  # time windows of paused traffic; the samples retention
STATUS_SUBJECT = "driftloop.rpc.monitor.status"
VERSION_SUBJECT = "driftloop.rpc.monitor.version"  # live stats of one version
# The consumers read for alerts alone start, when first created, with the last hour's events:
# an upgrade must not alert on every past event of the stream.
ALERT_ONLY_SINCE = 3600.0


def utcnow() -> datetime:
    return datetime.now(UTC)


async def serve(settings: Settings) -> None:
    client = await asyncio.to_thread(configure_mlflow, settings)  # may create its tables
    # no await between opening the store and `closing` it: a cancel cannot leak its pool
    uow = service.open_store(settings, service=SERVICE, messaging=messaging, versions=VERSIONS)
    async with service.closing(uow), connect_bus(settings, service=SERVICE) as bus:
        bus.metrics.register(monitor_collector(uow.engine))
        specs = service.SpecSource(bus)
        cached = CachedSpecSource(bus)  # read per batch: at most once a second
        profiles = Profiles()
        bus.subscribe_records(
            PREDICTIONS_STREAM,
            "driftloop.predictions.>",
            PredictionBatch,
            partial(handlers.on_predictions, uow=uow, specs=cached, now=utcnow, profiles=profiles),
            durable="predictions",
            many=partial(
                handlers.on_all_predictions, uow=uow, specs=cached, now=utcnow, profiles=profiles
            ),
        )
        labelled = Profiles()  # the feedback consumer's own: consumers are tasks of their own
        bus.subscribe_records(
            FEEDBACK_STREAM,
            "driftloop.feedback.>",
            FeedbackBatch,
            partial(handlers.on_feedback, uow=uow, specs=specs, now=utcnow, profiles=labelled),
            durable="feedback",
            many=partial(
                handlers.on_all_feedback, uow=uow, specs=specs, now=utcnow, profiles=labelled
            ),
        )
        alerts = AlertWorker(uow, settings, now=utcnow)
        alert = partial(
            alerting, uow=uow, specs=specs, settings=settings, now=utcnow, wake=alerts.wake
        )
        bus.subscribe(RetrainRequested, partial(handlers.on_retrain_requested, uow=uow))
        bus.subscribe(
            Deployed, alert(partial(handlers.on_deployed, uow=uow, client=client, now=utcnow))
        )
        bus.subscribe(
            EvaluationPassed, partial(handlers.on_evaluation_passed, uow=uow, client=client)
        )
        for ended in (EvaluationFailed, DataRejected, TrainingFailed):
            bus.subscribe(
                ended, alert(partial(handlers.on_cycle_ended, uow=uow, now=utcnow, specs=specs))
            )
        bus.subscribe(
            RolledBack,
            alert(
                partial(handlers.on_rolled_back, uow=uow, client=client, now=utcnow, specs=specs)
            ),
        )
        for told in (DriftDetected, PerformanceDegraded, AdaptationStalled, ApprovalRequired):
            bus.subscribe(told, alert(None), since=ALERT_ONLY_SINCE)

        async def answer_status(data: bytes) -> dict[str, Any]:
            model = str(json.loads(data or b"{}").get("model", ""))
            answer = await handlers.status(model, uow=uow, specs=specs)
            # per consumer, every model's: records its streams dropped before it read them
            return answer | {"records_discarded": dict(bus.discarded)}

        async def answer_version(data: bytes) -> dict[str, Any]:
            asked = json.loads(data or b"{}")
            since = asked.get("since")
            return await handlers.version_status(
                str(asked.get("model", "")),
                str(asked.get("version", "")),
                uow=uow,
                specs=specs,
                since=datetime.fromisoformat(since) if since else None,
            )

        await bus.respond(STATUS_SUBJECT, answer_status)
        await bus.respond(VERSION_SUBJECT, answer_version)
        bus.start_relay(uow)
        schedule = asyncio.create_task(_schedule_timer(uow, specs))
        upkeep = asyncio.create_task(_upkeep_timer(uow, specs))
        delivery = asyncio.create_task(alerts.run())
        try:
            await bus.run_until_stopped()
        finally:
            schedule.cancel()
            upkeep.cancel()
            delivery.cancel()


async def _schedule_timer(uow: SqlUnitOfWork, specs: service.SpecSource) -> None:
    while True:
        await asyncio.sleep(SCHEDULE_TICK_SECONDS)
        try:
            await handlers.check_schedule(uow=uow, specs=specs, now=utcnow())
        except Exception:
            logger.exception("schedule check failed")


async def _upkeep_timer(uow: SqlUnitOfWork, specs: service.SpecSource) -> None:
    while True:
        await asyncio.sleep(UPKEEP_TICK_SECONDS)
        try:
            await handlers.close_due_windows(uow=uow, specs=specs, now=utcnow())
            await handlers.prune_samples(uow=uow, specs=specs, now=utcnow())
        except Exception:
            logger.exception("upkeep failed")


def main() -> None:
    service.run(SERVICE, serve)
