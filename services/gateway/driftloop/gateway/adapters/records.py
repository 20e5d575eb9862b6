"""Prediction records leave the request path through a bounded queue to JetStream."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from driftloop.gateway.adapters.models import LoadedModel
from driftloop.shared.bus import Bus
from driftloop.shared.events import PredictionBatch

logger = logging.getLogger(__name__)


class RecordPublisher:
    def __init__(self, bus: Bus, *, capacity: int = 10_000, dropped: Counter | None = None) -> None:
        self.bus = bus
        self.queue: asyncio.Queue[PredictionBatch] = asyncio.Queue(maxsize=capacity)
        self.dropped = dropped

    def offer(self, batch: PredictionBatch) -> bool:
        """Queue a record without waiting; False (and counted) when the queue is full."""
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:
            if self.dropped is not None:
                self.dropped.labels(batch.model).inc()
            logger.warning("prediction record dropped: queue full", extra={"model": batch.model})
            return False
        return True

    async def run(self) -> None:
        while True:
            batch = await self.queue.get()
            while True:
                try:
                    await self.bus.publish_record(
                        f"driftloop.predictions.{batch.model}", batch, msg_id=batch.batch_id
                    )
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("publishing a prediction record failed; retrying")
                    await asyncio.sleep(0.5)
            self.queue.task_done()

    async def flush(self, timeout: float = 5.0) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout)


@dataclass(frozen=True)
class MirrorJob:
    model: str
    shadow: LoadedModel
    instances: list[dict[str, Any]]
    ids: list[str]


class ShadowMirror:
    """Runs the shadow version on a copy of served requests, off the request path.

    Bounded: when the shadow falls behind, new jobs are dropped and counted rather than
    queued without end or allowed to slow the champion. Its answers are recorded (route
    "shadow"), never returned.
    """

    def __init__(
        self, records: RecordPublisher, *, capacity: int = 256, dropped: Counter | None = None
    ) -> None:
        self.records = records
        self.queue: asyncio.Queue[MirrorJob] = asyncio.Queue(maxsize=capacity)
        self.dropped = dropped

    def offer(self, job: MirrorJob) -> bool:
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            if self.dropped is not None:
                self.dropped.labels(job.model, job.shadow.version).inc()
            return False
        return True

    async def run(self) -> None:
        while True:
            job = await self.queue.get()
            started = time.perf_counter()
            error: str | None = None
            predictions: list[Any] = []
            try:
                predictions, _ = await asyncio.to_thread(job.shadow.predict, job.instances)
            except Exception as exc:  # a failing shadow is a figure, not an outage
                error = f"{type(exc).__name__}: {exc}"[:500]
            self.records.offer(
                PredictionBatch(
                    model=job.model,
                    version=job.shadow.version,
                    route="shadow",
                    ids=job.ids,
                    instances=job.instances,
                    predictions=predictions,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    at=datetime.now(UTC),
                    error=error,
                )
            )
            self.queue.task_done()
