"""Prediction records leave the request path through a bounded, on-disk spool to JetStream."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import sqlite3
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
from nats.js.errors import BadRequestError
from prometheus_client import Counter

from driftloop.gateway.domain.records import (
    HEADER_ROOM,
    Piece,
    UnsplittableError,
    split_record,
)
from driftloop.shared.bus import (
    DEAD_LETTER_DELIVERIES,
    DEAD_LETTER_DURABLE,
    DEAD_LETTER_ERROR,
    DEAD_LETTER_SEQUENCE,
    DEAD_LETTER_STREAM,
    DEAD_LETTER_SUBJECT,
    DEADLETTER_PREFIX,
    Bus,
)
from driftloop.shared.events import PREDICTIONS_STREAM, PredictionBatch, prediction_subject
from driftloop.shared.telemetry import LogThrottle

logger = logging.getLogger(__name__)


class SpoolBusyError(RuntimeError):
    """Another process holds the spool's lock."""


def lock_spool(path: Path, wait: float) -> int:
    """An exclusive flock on the spool file `path` (created if absent), tried for up to `wait`
    s: its descriptor. The lock is on the file that is at `path` once held (one deleted by an
    adopter meanwhile is let go and the new one tried). Raises SpoolBusyError."""
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise SpoolBusyError(f"{path.name} is held by another process") from None
            time.sleep(0.1)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # deleted while we waited: try the file there now


class RecordSpool:
    """Prediction records on disk (SQLite, WAL) from before their request is answered until
    JetStream has acknowledged them: a gateway killed, or a bus away, loses none. Bounded by
    `capacity` records; `synchronous=NORMAL` survives a killed process (not a power cut).

    With `lock_wait` (seconds) the spool is held under an exclusive flock while open (a
    gateway worker's, spools.py: no other worker adopts it meanwhile); SpoolBusyError when
    another process keeps it that long."""

    def __init__(self, path: Path, *, capacity: int, lock_wait: float | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.lock = lock_spool(path, lock_wait) if lock_wait is not None else None
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "subject TEXT NOT NULL, msg_id TEXT NOT NULL, payload BLOB NOT NULL)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS dead_letters (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "subject TEXT NOT NULL, msg_id TEXT NOT NULL, payload BLOB NOT NULL, "
            "error TEXT NOT NULL, at REAL NOT NULL)"
        )
        self.size = int(self.db.execute("SELECT count(*) FROM records").fetchone()[0])

    def append(self, subject: str, msg_id: str, payload: bytes) -> bool:
        if self.size >= self.capacity:
            return False
        self.append_all([(subject, msg_id, payload)])
        return True

    def append_all(self, rows: list[tuple[str, str, bytes]]) -> None:
        """Keep records (subject, message id, payload) in one transaction: one write to the
        log for them all. The caller keeps within `capacity`."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO records (subject, msg_id, payload) VALUES (?, ?, ?)", rows
            )
        self.size += len(rows)

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

    def bury(self, subject: str, msg_id: str, payload: bytes, error: str) -> None:
        """Keep a record that can never be published (the newest DEAD_LETTERS_KEPT of them),
        for an operator: `SELECT * FROM dead_letters` in the spool file."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO dead_letters (subject, msg_id, payload, error, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (subject, msg_id, payload, error, time.time()),
            )
            self.db.execute(
                "DELETE FROM dead_letters WHERE seq <= (SELECT max(seq) FROM dead_letters) - ?",
                (DEAD_LETTERS_KEPT,),
            )

    def dead_letters(self) -> list[tuple[str, str, bytes, str]]:
        """The records kept by `bury`, oldest first: subject, message id, payload, error."""
        return list(
            self.db.execute("SELECT subject, msg_id, payload, error FROM dead_letters ORDER BY seq")
        )

    def close(self) -> None:
        self.db.close()
        if self.lock is not None:
            os.close(self.lock)  # lets the flock go
            self.lock = None


DEAD_LETTERS_KEPT = 100
# Publishing errors no retry can mend: the record is dead-lettered, not tried forever.
PERMANENT = (nats.errors.MaxPayloadError, BadRequestError)
IN_FLIGHT = 100  # records published at once, each awaiting its JetStream ack


class RecordPublisher:
    """Records leave the request path here: written to the spool (or, without one, a bounded
    in-memory queue) before the request is answered, published to JetStream by `run` with the
    record's id as `Nats-Msg-Id` (a re-publish after a crash is de-duplicated).

    `keep` writes the records of the requests answered in one event-loop turn in one
    transaction (a group commit: concurrent requests, a batch above all, finish in the same
    turn), each request waiting for its group's write before it is answered: one disk write
    per turn rather than one per request, and still no answer without its record on disk.

    The spool's oldest records are published `IN_FLIGHT` at a time, their acks awaited
    together: one record per ack round trip kept JetStream at 17-60 records/s under load while
    the gateway answered 300-600 requests/s, and the spool filled (then 503s). Records within
    such a group may reach the stream in any order; none depends on another's place.

    A record over the server's `max_payload` is published in pieces that fit
    (domain/records.py); one that can never be published (a single row over it, a payload that
    is no record, an error no retry mends) is dead-lettered: kept in the spool's `dead_letters`
    table, announced on the dead-letter stream and counted, and the queue goes on."""

    def __init__(
        self,
        bus: Bus,
        *,
        capacity: int = 10_000,
        dropped: Counter | None = None,
        spool: Path | None = None,
        dead_letters: Counter | None = None,
        lock_wait: float | None = None,
    ) -> None:
        self.bus = bus
        self.dead_letters = dead_letters
        self.dead_lettered = 0  # records dead-lettered since start
        self.queue: asyncio.Queue[PredictionBatch] = asyncio.Queue(maxsize=capacity)
        self.dropped = dropped
        self.spool = (
            RecordSpool(spool, capacity=capacity, lock_wait=lock_wait)
            if spool is not None
            else None
        )
        self.capacity = capacity
        self._refusals = LogThrottle(every=10.0)
        self._waiting = asyncio.Event()
        self._idle = asyncio.Event()  # set when every spooled record is published
        self._group: list[tuple[str, str, bytes]] = []  # kept this turn, written at its end
        self._written: asyncio.Future[None] | None = None  # the group's write
        if self.spool is not None and self.spool.size:
            self._waiting.set()  # records of an earlier run: deliver them first
            logger.info("replaying spooled prediction records", extra={"count": self.spool.size})

    async def keep(self, batch: PredictionBatch) -> bool:
        """Keep a record without waiting for the bus, on disk when there is a spool (returns
        once its group is written); False (and counted) when full."""
        if self.spool is None:
            return self.offer(batch)
        if self.spool.size + len(self._group) >= self.capacity:
            return self._refused(batch.model)
        subject = prediction_subject(batch.model, batch.route)
        self._group.append((subject, batch.batch_id, batch.model_dump_json().encode()))
        written = self._written
        if written is None:
            written = self._written = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._write_group, self.spool)
        await asyncio.shield(written)  # a cancelled request leaves its group's write alone
        return True

    def _write_group(self, spool: RecordSpool) -> None:
        rows, written = self._group, self._written
        self._group, self._written = [], None
        assert written is not None
        try:
            spool.append_all(rows)
        except Exception as exc:  # each request of the group fails (a 500), none answered
            written.set_exception(exc)
            return
        written.set_result(None)
        self._idle.clear()
        # The group's requests answer before the publisher reads their records back to publish
        # them (they are on disk): on the next turn each request's wake-up is queued (through
        # its shield), and only then, behind them, the publisher's.
        asyncio.get_running_loop().call_soon(self._waiting.set)

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

    async def publish_spooled(self) -> None:
        """Publish every spooled record and return (an orphaned spool's, spools.py); retried
        while the bus is away."""
        assert self.spool is not None
        while rows := self.spool.oldest(IN_FLIGHT):
            await self._publish_all(self.spool, rows)

    async def _publish_all(
        self, spool: RecordSpool, rows: list[tuple[int, str, str, bytes]]
    ) -> None:
        """Publish the rows together, forgetting each once acknowledged; those that failed are
        tried again (all of them, after a pause) until none is left."""
        while rows:
            results = await asyncio.gather(
                *(self._deliver(subject, msg_id, payload) for _, subject, msg_id, payload in rows),
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
                await self._deliver(subject, msg_id, payload)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("publishing a prediction record failed; retrying")
                await asyncio.sleep(0.5)

    async def _deliver(self, subject: str, msg_id: str, payload: bytes) -> None:
        """Publish one record, in pieces when it is over the server's max_payload; dead-letter
        what can never be published (a row over it on its own, a piece refused for good) once
        the rest is published. Raises when a retry may succeed: the record is tried again as a
        whole, its pieces already stored de-duplicated by their Nats-Msg-Id."""
        limit = self.bus.nc.max_payload - HEADER_ROOM
        if len(payload) <= limit:  # the usual record, one message: no pieces to gather
            try:
                await self.bus.publish_raw(subject, payload, msg_id=msg_id)
            except PERMANENT as exc:
                await self._dead_letter(subject, msg_id, payload, exc)
            return
        try:
            pieces = split_record(msg_id, payload, limit)
        except UnsplittableError as exc:
            await self._dead_letter(subject, msg_id, payload, exc)
            return
        sent = [p for p in pieces if p.fits]
        results = await asyncio.gather(
            *(self.bus.publish_raw(subject, p.payload, msg_id=p.msg_id) for p in sent),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise result
        retry = [r for r in results if r is not None and not isinstance(r, PERMANENT)]
        if retry:
            raise retry[0]
        dead: list[tuple[Piece, BaseException]] = [
            (p, r) for p, r in zip(sent, results, strict=True) if r is not None
        ]
        dead += [
            (p, UnsplittableError(f"one row of {len(p.payload)} bytes is over {limit}"))
            for p in pieces
            if not p.fits
        ]
        for piece, error in dead:
            await self._dead_letter(subject, piece.msg_id, piece.payload, error)

    async def _dead_letter(
        self, subject: str, msg_id: str, payload: bytes, error: BaseException
    ) -> None:
        """Keep the record in the spool, count it, and announce it on the dead-letter stream
        (`driftloop events` shows it): the record itself when it fits, else a summary."""
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:1000]
        reason = reason.encode("ascii", "backslashreplace").decode()  # a header value
        tokens = subject.split(".")
        model = tokens[2] if len(tokens) > 2 else "_"
        self.dead_lettered += 1
        if self.dead_letters is not None:
            self.dead_letters.labels(model).inc()
        if self.spool is not None:
            self.spool.bury(subject, msg_id, payload, reason)
        logger.error(
            "prediction record dead-lettered",
            extra={"subject": subject, "msg_id": msg_id, "bytes": len(payload), "error": reason},
        )
        notice = payload
        if len(payload) > self.bus.nc.max_payload - HEADER_ROOM:
            kept = "the gateway's spool, table dead_letters" if self.spool else "nowhere"
            notice = json.dumps(
                {"msg_id": msg_id, "subject": subject, "bytes": len(payload), "kept_in": kept}
            ).encode()
        headers = {
            "Nats-Msg-Id": f"{msg_id}:dlq",
            DEAD_LETTER_SUBJECT: subject,
            DEAD_LETTER_STREAM: PREDICTIONS_STREAM,
            DEAD_LETTER_SEQUENCE: "0",  # it never reached the stream
            DEAD_LETTER_DURABLE: f"{self.bus.service}-records",
            DEAD_LETTER_DELIVERIES: "0",
            DEAD_LETTER_ERROR: reason,
        }
        try:
            await self.bus.js.publish(
                f"{DEADLETTER_PREFIX}.{model}.{self.bus.service}-records", notice, headers=headers
            )
        except Exception as exc:  # kept and counted all the same; the queue goes on
            logger.warning(
                "announcing a dead-lettered record failed",
                extra={"msg_id": msg_id, "error": f"{type(exc).__name__}: {exc}"},
            )

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
