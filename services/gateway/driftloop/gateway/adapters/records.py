"""Prediction records leave the request path through a bounded, on-disk spool to JetStream."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from driftloop.shared.bus import Bus
from driftloop.shared.events import PredictionBatch, prediction_subject
from driftloop.shared.telemetry import LogThrottle

logger = logging.getLogger(__name__)


class RecordSpool:
    """Prediction records on disk (SQLite, WAL) from before their request is answered until
    JetStream has acknowledged them: a gateway killed, or a bus away, loses none. Bounded by
    `capacity` records; `synchronous=NORMAL` survives a killed process (not a power cut)."""

    def __init__(self, path: Path, *, capacity: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "subject TEXT NOT NULL, msg_id TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        self.size = int(self.db.execute("SELECT count(*) FROM records").fetchone()[0])

    def append(self, subject: str, msg_id: str, payload: bytes) -> bool:
        if self.size >= self.capacity:
            return False
        self.db.execute(
            "INSERT INTO records (subject, msg_id, payload) VALUES (?, ?, ?)",
            (subject, msg_id, payload),
        )
        self.size += 1
        return True

    def oldest(self, limit: int = 100) -> list[tuple[int, str, str, bytes]]:
        return list(
            self.db.execute(
                "SELECT seq, subject, msg_id, payload FROM records ORDER BY seq LIMIT ?", (limit,)
            )
        )

    def remove(self, seqs: list[int]) -> None:
        """Forget published records, in one transaction."""
        if not seqs:
            return
        with self.db:  # one commit for them all
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM records WHERE seq = ?", [(seq,) for seq in seqs])
        self.size -= len(seqs)

    def close(self) -> None:
        self.db.close()


IN_FLIGHT = 100  # records published at once, each awaiting its JetStream ack


class RecordPublisher:
    """Records leave the request path here: written to the spool (or, without one, a bounded
    in-memory queue) when the request is answered, published to JetStream by `run` with the
    record's id as `Nats-Msg-Id` (a re-publish after a crash is de-duplicated).

    The spool's oldest records are published `IN_FLIGHT` at a time, their acks awaited
    together: one record per ack round trip kept JetStream at 17-60 records/s under load while
    the gateway answered 300-600 requests/s, and the spool filled (then 503s). Records within
    such a group may reach the stream in any order; none depends on another's place."""

    def __init__(
        self,
        bus: Bus,
        *,
        capacity: int = 10_000,
        dropped: Counter | None = None,
        spool: Path | None = None,
    ) -> None:
        self.bus = bus
        self.queue: asyncio.Queue[PredictionBatch] = asyncio.Queue(maxsize=capacity)
        self.dropped = dropped
        self.spool = RecordSpool(spool, capacity=capacity) if spool is not None else None
        self.capacity = capacity
        self._refusals = LogThrottle(every=10.0)
        self._waiting = asyncio.Event()
        self._idle = asyncio.Event()  # set when every spooled record is published
        if self.spool is not None and self.spool.size:
            self._waiting.set()  # records of an earlier run: deliver them first
            logger.info("replaying spooled prediction records", extra={"count": self.spool.size})

    def offer(self, batch: PredictionBatch) -> bool:
        """Keep a record without waiting for the bus; False (and counted) when full."""
        if self.spool is not None:
            return self.offer_json(
                batch.model, batch.batch_id, batch.model_dump_json().encode(), route=batch.route
            )
        try:
            self.queue.put_nowait(batch)
            kept = True
        except asyncio.QueueFull:
            kept = False
        return kept or self._refused(batch.model)

    def offer_json(
        self, model: str, batch_id: str, payload: bytes, *, route: str = "champion"
    ) -> bool:
        """`offer` of a record already serialised (a PredictionBatch's JSON, made elsewhere:
        the shadow worker makes its own); `route` is the record's."""
        if self.spool is None:
            return self.offer(PredictionBatch.model_validate_json(payload))
        kept = self.spool.append(prediction_subject(model, route), batch_id, payload)
        if kept:
            self._idle.clear()
            self._waiting.set()
        return kept or self._refused(model)

    def _refused(self, model: str) -> bool:
        if self.dropped is not None:
            self.dropped.labels(model).inc()
        count = self._refusals.due(time.monotonic())
        if count is not None:  # a line per request would flood the log under overload
            logger.warning(
                "prediction records refused: buffer full",
                extra={"model": model, "refused": count, "capacity": self.capacity},
            )
        return False

    async def run(self) -> None:
        if self.spool is not None:
            await self._run_spool(self.spool)
            return
        while True:
            batch = await self.queue.get()
            await self._publish(
                prediction_subject(batch.model, batch.route),
                batch.batch_id,
                batch.model_dump_json().encode(),
            )
            self.queue.task_done()

    async def _run_spool(self, spool: RecordSpool) -> None:
        while True:
            rows = spool.oldest(IN_FLIGHT)
            if not rows:
                self._waiting.clear()
                self._idle.set()
                await self._waiting.wait()
                continue
            await self._publish_all(spool, rows)

    async def _publish_all(
        self, spool: RecordSpool, rows: list[tuple[int, str, str, bytes]]
    ) -> None:
        """Publish the rows together, forgetting each once acknowledged; those that failed are
        tried again (all of them, after a pause) until none is left."""
        while rows:
            results = await asyncio.gather(
                *(
                    self.bus.publish_raw(subject, payload, msg_id=msg_id)
                    for _, subject, msg_id, payload in rows
                ),
                return_exceptions=True,
            )
            spool.remove([row[0] for row, r in zip(rows, results, strict=True) if r is None])
            failed = [(row, r) for row, r in zip(rows, results, strict=True) if r is not None]
            if not failed:
                return
            first = failed[0][1]
            if isinstance(first, asyncio.CancelledError):
                raise first
            logger.warning(
                "publishing prediction records failed; retrying",
                extra={"failed": len(failed), "error": f"{type(first).__name__}: {first}"},
            )
            rows = [row for row, _ in failed]
            await asyncio.sleep(0.5)

    async def _publish(self, subject: str, msg_id: str, payload: bytes) -> None:
        while True:
            try:
                await self.bus.publish_raw(subject, payload, msg_id=msg_id)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("publishing a prediction record failed; retrying")
                await asyncio.sleep(0.5)

    @property
    def pending(self) -> int:
        return self.spool.size if self.spool is not None else self.queue.qsize()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait (up to `timeout`) until every record is published; spooled ones that are not
        stay on disk for the next start."""
        with suppress(TimeoutError):
            if self.spool is None:
                await asyncio.wait_for(self.queue.join(), timeout)
            else:
                await asyncio.wait_for(self._idle.wait(), timeout)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


@dataclass(frozen=True)
class MirrorJob:
    """One served champion request to run again on the model's shadow version."""

    model: str
    version: str  # the shadow's
    instances: list[dict[str, Any]]
    ids: list[str]
