"""Record consumers (the monitor's and the trainer's predictions and feedback) handle each
fetch's messages in one transaction, against a real nats-server and a real database: every
record is written once with its inbox row, a record whose handler fails is rolled back alone,
a batch whose commit fails is redelivered whole and written once, and the process's other
transactions wait their turn instead of failing on the batch's lock."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import consumer_settled, eventually

from driftloop.shared.bus import Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.db import SqlUnitOfWork, make_engine, messaging_tables
from driftloop.shared.events import PREDICTIONS_STREAM, PredictionBatch

DURABLE = "t-predictions"


@dataclass
class Store:
    engine: sa.Engine
    uow: SqlUnitOfWork
    written: sa.Table
    inbox: sa.Table
    commits: list[int]

    def rows(self, table: sa.Table) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(table)))


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    metadata = sa.MetaData()
    messaging = messaging_tables(metadata, "t")
    written = sa.Table(
        "t_written",
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("note", sa.String(64), nullable=True),
    )
    # a short lock wait: a transaction that would block on the batch's lock fails fast
    engine = make_engine(settings.database_url_for("t"), busy_timeout=0.5)
    metadata.create_all(engine)
    commits: list[int] = []
    sa.event.listen(engine, "commit", lambda _conn: commits.append(1))
    uow = SqlUnitOfWork(engine, service="t", messaging=messaging)
    yield Store(engine, uow, written, messaging.inbox, commits)
    engine.dispose()


def record(n: int) -> PredictionBatch:
    return PredictionBatch(
        model="m",
        version="1",
        route="champion",
        ids=[f"id-{n}"],
        instances=[{"x": float(n)}],
        predictions=[0],
        latency_ms=1.0,
        at=datetime.now(UTC),
    )


async def publish(bus: Bus, records: list[PredictionBatch]) -> None:
    for r in records:
        await bus.publish_record(f"driftloop.predictions.{r.model}", r, msg_id=r.batch_id)


def consume(
    bus: Bus,
    handler: Callable[[PredictionBatch], Awaitable[None]],
    many: Callable[[list[tuple[str, PredictionBatch]]], Awaitable[None]] | None = None,
) -> None:
    """The consumer as the monitor and the trainer start theirs (`many`: each fetch handed
    whole)."""
    bus.subscribe_records(
        PREDICTIONS_STREAM,
        "driftloop.predictions.>",
        PredictionBatch,
        handler,
        durable="predictions",
        many=many,
    )


async def settled(bus: Bus, acked: int) -> Any:
    return await consumer_settled(bus.js, DURABLE, acked=acked, stream=PREDICTIONS_STREAM)


async def test_a_fetch_of_records_is_one_transaction_and_a_failing_record_rolls_back_alone(
    settings: Settings, store: Store
) -> None:
    records = [record(n) for n in range(10)]
    failing = records[4].batch_id
    calls: dict[str, int] = {}

    async def handler(batch: PredictionBatch) -> None:
        calls[batch.batch_id] = calls.get(batch.batch_id, 0) + 1
        async with store.uow.handling() as tx:
            tx.conn.execute(store.written.insert().values(batch_id=batch.batch_id))
            if batch.batch_id == failing and calls[failing] == 1:
                raise ValueError("the first attempt fails after its write")

    async with connect_bus(settings, service="t") as bus:
        await publish(bus, records)  # all stored before the consumer fetches them
        consume(bus, handler)
        await settled(bus, acked=10)

    written = [r.batch_id for r in store.rows(store.written)]
    assert sorted(written) == sorted(r.batch_id for r in records)  # once each
    assert len(store.rows(store.inbox)) == 10
    assert calls[failing] == 2
    assert all(v == 1 for k, v in calls.items() if k != failing)
    # the first fetch's nine records in one commit, the failed one's redelivery in another
    assert len(store.commits) == 2, store.commits


async def test_a_batch_whose_commit_fails_is_redelivered_whole_and_written_once(
    settings: Settings, store: Store
) -> None:
    records = [record(n) for n in range(5)]
    failed: list[int] = []

    def fail_first_commit(_conn: Any) -> None:
        if not failed:
            failed.append(1)
            raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

    sa.event.listen(store.engine, "commit", fail_first_commit)
    seen: list[str] = []

    async def handler(batch: PredictionBatch) -> None:
        seen.append(batch.batch_id)
        async with store.uow.handling() as tx:
            tx.conn.execute(store.written.insert().values(batch_id=batch.batch_id))

    async with connect_bus(settings, service="t") as bus:
        await publish(bus, records)
        consume(bus, handler)
        await settled(bus, acked=5)

    assert failed == [1]
    assert len(seen) == 10  # every record handled twice: the first commit wrote nothing
    assert sorted(r.batch_id for r in store.rows(store.written)) == sorted(
        r.batch_id for r in records
    )
    assert len(store.rows(store.inbox)) == 5


async def test_another_transaction_of_the_process_waits_for_the_batch_instead_of_failing(
    settings: Settings, store: Store
) -> None:
    """The batch's transaction spans its handlers' awaits; a timer's transaction that came in
    between would block the event loop on SQLite's lock held by the batch, and fail."""
    records = [record(n) for n in range(3)]
    timer_done: list[str] = []
    timer: list[asyncio.Task[None]] = []

    async def a_timer() -> None:
        async with store.uow.transaction() as tx:
            tx.conn.execute(store.written.insert().values(batch_id="timer", note="timer"))
        timer_done.append("ok")

    async def handler(batch: PredictionBatch) -> None:
        if batch.batch_id == records[1].batch_id and not timer:
            # a task of its own, as a timer is: not in the handler's context
            timer.append(asyncio.create_task(a_timer(), context=contextvars.Context()))
            await asyncio.sleep(0.2)  # an await between records: the timer runs meanwhile
        async with store.uow.handling() as tx:
            tx.conn.execute(store.written.insert().values(batch_id=batch.batch_id))

    async with connect_bus(settings, service="t") as bus:
        await publish(bus, records)
        consume(bus, handler)
        await settled(bus, acked=3)
        await eventually(lambda: bool(timer) and timer[0].done())
        timer[0].result()  # raised "database is locked" without the unit of work's lock

    assert timer_done == ["ok"]
    assert len(store.rows(store.written)) == 4


def test_the_unit_of_work_has_one_writer_lock() -> None:
    """A guard for the test above: it relies on the lock being the unit of work's own."""
    engine = make_engine("sqlite://")
    uow = SqlUnitOfWork(engine, service="t", messaging=messaging_tables(sa.MetaData(), "t"))
    assert isinstance(uow.writing, asyncio.Lock)


async def test_a_fetch_handed_whole_is_one_call_and_leaves_out_what_was_handled_before(
    settings: Settings, store: Store
) -> None:
    records = [record(n) for n in range(10)]
    with store.engine.begin() as conn:  # three of them handled before (a redelivery)
        conn.execute(
            store.inbox.insert(),
            [{"message_id": r.batch_id, "handled_at": datetime.now(UTC)} for r in records[:3]],
        )
    given: list[list[str]] = []
    alone: list[str] = []

    async def handler(batch: PredictionBatch) -> None:
        alone.append(batch.batch_id)

    async def many(fetched: list[tuple[str, PredictionBatch]]) -> None:
        async with store.uow.handling_all(fetched) as (tx, fresh):
            given.append([b.batch_id for b in fresh])
            tx.conn.execute(store.written.insert(), [{"batch_id": b.batch_id} for b in fresh])

    async with connect_bus(settings, service="t") as bus:
        await publish(bus, records)  # all stored before the consumer fetches them
        consume(bus, handler, many)
        await settled(bus, acked=10)

    assert given == [[r.batch_id for r in records[3:]]]  # one call, in order, no repeat
    assert alone == []
    assert sorted(r.batch_id for r in store.rows(store.written)) == sorted(given[0])
    assert len(store.rows(store.inbox)) == 10
    assert len(store.commits) == 2  # the three inbox rows set up, then the fetch


async def test_after_a_fetch_that_did_not_fill_the_consumer_rests_then_takes_the_rest_at_once(
    settings: Settings, store: Store
) -> None:
    records = [record(n) for n in range(10)]
    given: list[list[str]] = []

    async def handler(batch: PredictionBatch) -> None:
        raise AssertionError("the fetch is handled whole")

    async def many(fetched: list[tuple[str, PredictionBatch]]) -> None:
        async with store.uow.handling_all(fetched) as (tx, fresh):
            given.append([b.batch_id for b in fresh])
            tx.conn.execute(store.written.insert(), [{"batch_id": b.batch_id} for b in fresh])

    lingering = settings.model_copy(update={"record_linger": 3.0, "record_fetch": 500})
    async with connect_bus(lingering, service="t") as bus:
        consume(bus, handler, many)
        await publish(bus, records[:1])

        async def first_handled() -> bool:
            assert given == [[records[0].batch_id]], given  # at once, not after the rest
            return True

        await eventually(first_handled, timeout=2)  # well before the 3 s rest ends
        await publish(bus, records[1:])  # one by one, while the consumer rests
        await settled(bus, acked=10)

    assert given == [[records[0].batch_id], [r.batch_id for r in records[1:]]]  # in order
    assert len(store.rows(store.written)) == 10
    assert len(store.rows(store.inbox)) == 10


async def test_a_fetch_whose_whole_handling_fails_is_handled_one_by_one_the_bad_record_alone(
    settings: Settings, store: Store
) -> None:
    records = [record(n) for n in range(8)]
    bad = records[5].batch_id
    calls: dict[str, int] = {}
    whole_calls: list[int] = []

    async def handler(batch: PredictionBatch) -> None:
        calls[batch.batch_id] = calls.get(batch.batch_id, 0) + 1
        async with store.uow.handling() as tx:
            tx.conn.execute(store.written.insert().values(batch_id=batch.batch_id))
            if batch.batch_id == bad and calls[bad] == 1:
                raise ValueError("a record its handler fails on, once")

    async def many(fetched: list[tuple[str, PredictionBatch]]) -> None:
        whole_calls.append(len(fetched))
        async with store.uow.handling_all(fetched) as (tx, fresh):
            tx.conn.execute(store.written.insert(), [{"batch_id": b.batch_id} for b in fresh])
            if any(b.batch_id == bad for b in fresh):
                raise ValueError("the fetch fails whole: written rows rolled back")

    async with connect_bus(settings, service="t") as bus:
        await publish(bus, records)
        consume(bus, handler, many)
        await settled(bus, acked=8)

    written = [r.batch_id for r in store.rows(store.written)]
    assert sorted(written) == sorted(r.batch_id for r in records)  # once each
    assert whole_calls[0] == 8  # tried whole first
    assert calls[bad] == 2  # failed alone, then its redelivery passed
    assert all(calls[r.batch_id] == 1 for r in records if r.batch_id != bad)
    assert len(store.rows(store.inbox)) == 8
