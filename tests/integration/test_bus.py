"""The bus against a real nats-server and a real database: unreadable messages are terminated,
repeats are handled once, a message gets one transaction, the outbox relay publishes once,
RetryLaterError redelivers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import consumer_settled, eventually, read_all_events
from nats.js.api import ConsumerInfo

from driftloop.shared.bus import (
    DEAD_LETTER_ERROR,
    DEADLETTER_STREAM,
    Bus,
    RetryLaterError,
    connect_bus,
)
from driftloop.shared.config import Settings
from driftloop.shared.db import (
    Messaging,
    SqlUnitOfWork,
    TransactionScopeError,
    current_message_id,
    delivering,
    make_engine,
    messaging_tables,
    prune_inbox,
)
from driftloop.shared.events import EVENTS_STREAM, Envelope, ModelTrained, envelope

SUBJECT = "driftloop.events.m.ModelTrained"
DURABLE = "t-ModelTrained"


@dataclass
class Store:
    engine: sa.Engine
    messaging: Messaging
    handled: sa.Table
    uow: SqlUnitOfWork

    def handled_runs(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(self.handled.c.run_id)).scalars())


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    metadata = sa.MetaData()
    messaging = messaging_tables(metadata, "t")
    handled = sa.Table(
        "t_handled",
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
    )
    engine = make_engine(settings.database_url_for("t"))
    metadata.create_all(engine)
    yield Store(engine, messaging, handled, SqlUnitOfWork(engine, service="t", messaging=messaging))
    engine.dispose()


async def stream_messages(settings: Settings) -> int:
    async with connect_bus(settings, service="probe", ensure=False) as bus:
        info = await bus.js.stream_info(EVENTS_STREAM)
    return int(info.state.messages)


def trained(version: str = "1") -> ModelTrained:
    return ModelTrained(
        model="m",
        cycle_id=str(uuid.uuid4()),
        version=version,
        run_id=f"run-{version}",
        dataset_version="abc",
        metrics={"f1": 0.9},
        trigger="manual",
    )


async def drained(bus: Bus, *, acked: int) -> ConsumerInfo:
    info: ConsumerInfo = await consumer_settled(bus.js, DURABLE, acked=acked)
    return info


async def test_unreadable_messages_are_terminated_and_the_next_event_is_handled(
    settings: Settings,
) -> None:
    unknown = Envelope(
        id=str(uuid.uuid4()),
        source="/services/future",
        type="ModelRetrainedV9",
        time=datetime.now(UTC),
        subject="m",
        data={"model": "m"},
    )
    event = trained()
    seen: list[ModelTrained] = []

    async def handler(received: ModelTrained) -> None:
        seen.append(received)

    async with connect_bus(settings, service="t") as bus:
        await bus.js.publish(SUBJECT, b"\xff\x00 not json", headers={"Nats-Msg-Id": "garbage"})
        await bus.js.publish(SUBJECT, unknown.model_dump_json().encode())
        await bus.publish(event)
        bus.subscribe(ModelTrained, handler)

        info = await drained(bus, acked=3)

    assert seen == [event]
    assert info.num_redelivered == 0
    assert info.delivered is not None
    assert info.delivered.stream_seq == 3


async def test_the_same_event_delivered_twice_is_handled_once(
    settings: Settings, store: Store
) -> None:
    env = envelope(trained(), service="test")
    raw = env.model_dump_json().encode()
    calls: list[str | None] = []

    async def handler(received: ModelTrained) -> None:
        calls.append(current_message_id())
        async with store.uow.handling() as tx:
            tx.conn.execute(store.handled.insert().values(run_id=received.run_id))

    async with connect_bus(settings, service="t") as bus:
        # different Nats-Msg-Id headers, so JetStream stores both copies
        await bus.js.publish(SUBJECT, raw, headers={"Nats-Msg-Id": "copy-1"})
        await bus.js.publish(SUBJECT, raw, headers={"Nats-Msg-Id": "copy-2"})
        bus.subscribe(ModelTrained, handler)

        info = await drained(bus, acked=2)

    assert calls == [env.id, env.id]
    assert store.handled_runs() == ["run-1"]
    assert info.num_redelivered == 0
    with store.engine.connect() as conn:
        inbox = list(conn.execute(sa.select(store.messaging.inbox.c.message_id)).scalars())
    assert inbox == [env.id]


async def test_one_message_gets_one_transaction_and_a_second_is_refused_before_it_writes(
    store: Store,
) -> None:
    with delivering("m-1") as delivery:
        async with store.uow.handling() as tx:
            tx.conn.execute(store.handled.insert().values(run_id="first"))
        with pytest.raises(TransactionScopeError, match="second transaction for message m-1"):
            async with store.uow.handling() as tx:
                tx.conn.execute(store.handled.insert().values(run_id="second"))
        with pytest.raises(TransactionScopeError, match="without the message's inbox row"):
            async with store.uow.transaction() as tx:
                tx.conn.execute(store.handled.insert().values(run_id="aside"))
    with pytest.raises(TransactionScopeError, match="outside a handler"):
        async with store.uow.handling() as tx:
            tx.conn.execute(store.handled.insert().values(run_id="no message"))
    async with store.uow.transaction() as tx:  # a timer's or a command's
        tx.conn.execute(store.handled.insert().values(run_id="timer"))

    assert delivery.opened
    assert store.handled_runs() == ["first", "timer"]
    with store.engine.connect() as conn:
        inbox = list(conn.execute(sa.select(store.messaging.inbox.c.message_id)).scalars())
    assert inbox == ["m-1"]


async def test_a_handler_opening_two_transactions_for_its_message_is_dead_lettered_at_once(
    settings: Settings, store: Store
) -> None:
    """The deployer's supersede once did this: the second transaction failed on the inbox row
    the first had committed, as a duplicate, and the message was acked with the second's
    writes lost. Now it is refused as a programming error and the message dead-lettered."""
    refused: list[type[BaseException]] = []

    async def two_transactions(received: ModelTrained) -> None:
        async with store.uow.handling() as tx:
            tx.conn.execute(store.handled.insert().values(run_id="first"))
        try:
            async with store.uow.handling() as tx:
                tx.conn.execute(store.handled.insert().values(run_id="second"))
        except Exception as exc:
            refused.append(type(exc))
            raise

    async with connect_bus(settings, service="t") as bus:
        await bus.publish(trained("3"))
        bus.subscribe(ModelTrained, two_transactions)
        info = await drained(bus, acked=1)
        letter = await bus.js.get_msg(DEADLETTER_STREAM, 1)

    assert refused == [TransactionScopeError]
    assert store.handled_runs() == ["first"]
    assert info.num_redelivered == 0
    assert letter.headers is not None
    assert letter.headers[DEAD_LETTER_ERROR].startswith("TransactionScopeError: a second")


async def test_an_emitted_event_is_relayed_once_with_its_id_as_nats_msg_id(
    settings: Settings, store: Store
) -> None:
    event = trained("7")
    outbox = store.messaging.outbox

    async with connect_bus(settings, service="t") as bus:
        bus.start_relay(store.uow)
        with delivering("cause-1"):
            async with store.uow.handling() as tx:
                event_id = tx.emit(event)

        async def relayed() -> list[dict[str, Any]]:
            with store.engine.connect() as conn:
                published = conn.execute(sa.select(outbox.c.published_at)).scalar_one()
            assert published is not None
            events: list[dict[str, Any]] = await read_all_events(settings.resolved_nats_url(), "m")
            return events

        events = await eventually(relayed, timeout=10, interval=0.1)

    [only] = events
    assert only["envelope"]["id"] == event_id
    assert only["headers"]["Nats-Msg-Id"] == event_id
    assert only["envelope"]["type"] == "ModelTrained"
    assert only["envelope"]["source"] == "/services/t"
    assert only["envelope"]["data"]["version"] == "7"
    with store.engine.connect() as conn:
        assert list(conn.execute(sa.select(store.messaging.inbox.c.message_id)).scalars()) == [
            "cause-1"
        ]


async def test_a_relay_that_publishes_again_after_a_crash_leaves_one_event_on_the_stream(
    settings: Settings, store: Store
) -> None:
    outbox = store.messaging.outbox

    async def published() -> bool:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(outbox.c.published_at)).scalar_one() is not None

    async with connect_bus(settings, service="t") as bus:
        bus.start_relay(store.uow)
        async with store.uow.transaction() as tx:
            event_id = tx.emit(trained("8"))
        await eventually(published, timeout=10, interval=0.1)
        # A crash between publishing and marking the row: the relay sends it again.
        with store.engine.begin() as conn:
            conn.execute(outbox.update().values(published_at=None))
        store.uow.committed.set()

        await eventually(published, timeout=10, interval=0.1)
        events = await read_all_events(settings.resolved_nats_url(), "m")

    assert [e["envelope"]["id"] for e in events] == [event_id]
    assert await stream_messages(settings) == 1


async def test_retry_later_redelivers_until_the_handler_succeeds(
    settings: Settings, store: Store
) -> None:
    event = trained()
    calls: list[str | None] = []

    async def handler(received: ModelTrained) -> None:
        calls.append(current_message_id())
        if len(calls) == 1:
            raise RetryLaterError("not yet", delay=0.1)
        async with store.uow.handling() as tx:
            tx.conn.execute(store.handled.insert().values(run_id=received.run_id))

    async with connect_bus(settings, service="t") as bus:
        event_id = await bus.publish(event)
        bus.subscribe(ModelTrained, handler)

        await drained(bus, acked=1)

    assert calls == [event_id, event_id]
    assert store.handled_runs() == ["run-1"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_stopping_drains_the_message_in_hand_and_returns_the_rest_unacked(
    settings: Settings,
) -> None:
    events = [trained(str(v)) for v in range(1, 6)]
    started: list[str] = []
    finished: list[str] = []
    release = asyncio.Event()

    async def slow(received: ModelTrained) -> None:
        started.append(received.version)
        await release.wait()
        finished.append(received.version)

    async with connect_bus(settings, service="t") as bus:
        for event in events:
            await bus.publish(event)
        bus.subscribe(ModelTrained, slow)
        await eventually(lambda: asyncio.sleep(0, result=started == ["1"]), timeout=10)
        closing = asyncio.create_task(bus.close(drain=10))
        await asyncio.sleep(0.3)
        assert not closing.done(), "close waits for the message in hand"
        release.set()
        await closing

    assert finished == ["1"]
    handled_later: list[str] = []

    async def quick(received: ModelTrained) -> None:
        handled_later.append(received.version)

    async with connect_bus(settings, service="t") as again:
        again.subscribe(ModelTrained, quick)
        # drained() waits 10 s, well within the 60 s ack wait: the four were handed back
        # (naked) when the first bus stopped, not left to time out.
        await drained(again, acked=5)
    assert sorted(handled_later) == ["2", "3", "4", "5"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_handler_past_the_drain_bound_is_cancelled_and_redelivered(
    settings: Settings, store: Store
) -> None:
    event = trained("9")
    attempts: list[str | None] = []
    stuck = asyncio.Event()

    async def writes_then_hangs(received: ModelTrained) -> None:
        attempts.append(current_message_id())
        async with store.uow.handling() as tx:
            tx.conn.execute(store.handled.insert().values(run_id=received.run_id))
            if len(attempts) == 1:
                stuck.set()
                await asyncio.Event().wait()  # never finishes: cut off at the bound

    async with connect_bus(settings, service="t") as bus:
        await bus.publish(event)
        bus.subscribe(ModelTrained, writes_then_hangs)
        await eventually(lambda: asyncio.sleep(0, result=stuck.is_set()), timeout=10)
        await bus.close(drain=0.5)

    assert store.handled_runs() == []  # its transaction rolled back, its message naked
    async with connect_bus(settings, service="t") as bus:
        bus.subscribe(ModelTrained, writes_then_hangs)
        await eventually(lambda: asyncio.sleep(0, result=len(attempts) == 2), timeout=30)
        await drained(bus, acked=1)
    assert store.handled_runs() == ["run-9"]


async def test_the_inbox_retention_forgets_old_messages_and_still_recognises_a_recent_repeat(
    settings: Settings, store: Store
) -> None:
    inbox = store.messaging.inbox
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(
            inbox.insert(),
            [{"message_id": f"old-{i}", "handled_at": now - timedelta(days=8)} for i in range(7)]
            + [{"message_id": "recent-0", "handled_at": now - timedelta(days=6)}],
        )
    env = envelope(trained(), service="test")
    raw = env.model_dump_json().encode()

    async def handler(received: ModelTrained) -> None:
        async with store.uow.handling() as tx:
            tx.conn.execute(store.handled.insert().values(run_id=received.run_id))

    async with connect_bus(settings, service="t") as bus:
        bus.subscribe(ModelTrained, handler)
        await bus.js.publish(SUBJECT, raw, headers={"Nats-Msg-Id": "copy-1"})
        await drained(bus, acked=1)
        deleted = prune_inbox(
            store.engine, store.messaging, older_than=now - timedelta(days=7), batch=3
        )
        await bus.js.publish(SUBJECT, raw, headers={"Nats-Msg-Id": "copy-2"})  # a redelivery
        info = await drained(bus, acked=2)

    assert deleted == 7
    with store.engine.connect() as conn:
        kept = set(conn.execute(sa.select(inbox.c.message_id)).scalars())
    assert kept == {"recent-0", env.id}
    assert store.handled_runs() == ["run-1"]
    assert info.num_redelivered == 0


async def test_every_service_with_a_relay_prunes_its_inbox_at_start(
    settings: Settings, store: Store
) -> None:
    inbox = store.messaging.inbox
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(
            inbox.insert(),
            [
                {"message_id": "old", "handled_at": now - timedelta(days=3)},
                {"message_id": "recent", "handled_at": now - timedelta(hours=23)},
            ],
        )
    store.uow.inbox_retention = timedelta(days=1)

    async def pruned() -> set[str]:
        with store.engine.connect() as conn:
            ids = set(conn.execute(sa.select(inbox.c.message_id)).scalars())
        assert ids == {"recent"}
        return ids

    async with connect_bus(settings, service="t") as bus:
        bus.start_relay(store.uow)

        assert await eventually(pruned, timeout=10, interval=0.1)


async def test_a_handler_longer_than_ack_wait_keeps_its_message_and_those_queued_behind_it(
    tmp_path: Path, nats_url: str
) -> None:
    """Work lasting longer than the ack wait (3 s here; heartbeats every second) while a second
    replica waits for messages on the same consumer: neither the message in hand nor those
    fetched with it expire and go to the other replica."""
    events = [trained(str(v)) for v in range(3)]
    handled: list[tuple[str, str]] = []
    working = asyncio.Event()

    def replica(name: str) -> Callable[[ModelTrained], Awaitable[None]]:
        async def handle(received: ModelTrained) -> None:
            if not handled and not working.is_set():
                working.set()
                await asyncio.sleep(4.5)  # the long work (training), not a wait for a condition
            handled.append((name, received.version))

        return handle

    settings = Settings(home=tmp_path / "home", nats_url=nats_url)  # no store: one variant
    async with connect_bus(settings, service="t") as first:
        for event in events:
            await first.publish(event)
        first.subscribe(ModelTrained, replica("first"), ack_wait=3.0)
        await asyncio.wait_for(working.wait(), timeout=10)
        async with connect_bus(settings, service="t") as second:
            second.subscribe(ModelTrained, replica("second"), ack_wait=3.0)

            info = await consumer_settled(first.js, DURABLE, acked=3)  # polls up to 10 s

    assert handled == [("first", "0"), ("first", "1"), ("first", "2")]
    assert info.num_redelivered == 0
