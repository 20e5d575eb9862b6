"""Prediction records leave the request path through a bounded queue to JetStream."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from prometheus_client import Counter

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
