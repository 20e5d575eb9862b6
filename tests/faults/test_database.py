"""Issue 8, item 5: a service's store busy or away is a transient failure. A SQLite file locked
by another connection past the busy timeout, and a PostgreSQL server restarted mid-traffic,
make the handler fail; the bus logs it as a retry (no traceback), redelivers the message with
backoff, and once the store is back every record is stored once: one inbox row per message,
no dead letter.

The trainer runs in-process (its real `serve()`: migrations, consumers, outbox relay) on a real
nats-server; its prediction consumer is the traffic."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from faults.harness import PrivatePostgres
from helpers import consumer_settled, eventually, seed_home

from driftloop.shared.bus import DEADLETTER_STREAM, Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.db import make_engine
from driftloop.shared.events import PREDICTIONS_STREAM, PredictionBatch
from driftloop.trainer.main import serve as trainer

pytestmark = pytest.mark.faults

ROWS = 5  # per batch
RETRYING = "database busy or unreachable; retrying"

Running = Callable[[Awaitable[Any]], Any]


def service_settings(tmp_path: Path, nats_url: str, **update: Any) -> Settings:
    return Settings(
        home=seed_home(tmp_path / "home"),
        nats_url=nats_url,
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
        **update,
    )


@pytest.fixture
async def client(tmp_path: Path, nats_url: str) -> AsyncIterator[Bus]:
    async with connect_bus(service_settings(tmp_path, nats_url), service="test") as bus:
        yield bus


async def start_trainer(settings: Settings, bus: Bus, running: Running) -> None:
    running(trainer(settings))

    async def answers() -> bool:
        try:
            await bus.request("driftloop.rpc.ping.trainer", timeout=1.0)
        except (TimeoutError, nats.errors.Error):
            return False
        return True

    await eventually(answers, timeout=60)


async def predict(bus: Bus, batches: int) -> None:
    """Publish `batches` served batches of ROWS rows, as the gateway does."""
    for _ in range(batches):
        batch = PredictionBatch(
            model="churn",
            version="1",
            route="champion",
            ids=[str(uuid.uuid4()) for _ in range(ROWS)],
            instances=[{"tenure": float(i)} for i in range(ROWS)],
            predictions=[0] * ROWS,
            latency_ms=1.0,
            at=datetime.now(UTC),
        )
        await bus.publish_record("driftloop.predictions.churn", batch, msg_id=batch.batch_id)


async def stored_once(bus: Bus, url: str, batches: int) -> None:
    """Every batch stored, each message's inbox row once, nothing dead-lettered, and the
    consumer holds nothing pending or unacked."""
    engine = make_engine(url)

    async def counted() -> bool:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM trainer_samples").scalar_one()
            inbox = conn.exec_driver_sql("SELECT count(*) FROM trainer_inbox").scalar_one()
        assert (rows, inbox) == (batches * ROWS, batches), f"rows={rows}, inbox rows={inbox}"
        return True

    try:
        await eventually(counted, timeout=60, interval=0.2)
    finally:
        engine.dispose()
    await consumer_settled(bus.js, "trainer-predictions", acked=batches, stream=PREDICTIONS_STREAM)
    dead = await bus.js.stream_info(DEADLETTER_STREAM)
    assert dead.state.messages == 0


def retries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == RETRYING]


async def test_a_locked_sqlite_file_delays_records_and_loses_or_repeats_none(
    tmp_path: Path,
    nats_url: str,
    client: Bus,
    running: Running,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another connection takes the trainer's SQLite file's write lock (BEGIN IMMEDIATE) and
    holds it while batches arrive, past the busy timeout (1 s here) and until the trainer has
    retried twice (some seconds); then it lets go."""
    caplog.set_level(logging.WARNING, logger="driftloop.shared.bus")
    settings = service_settings(tmp_path, nats_url, sqlite_busy_timeout=1.0)
    await start_trainer(settings, client, running)
    await predict(client, 3)
    await stored_once(client, settings.database_url_for("trainer"), 3)
    taken, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        holder = sqlite3.connect(settings.home / "db" / "trainer.sqlite", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            taken.set()
            release.wait(timeout=60)
            holder.execute("COMMIT")
        finally:
            holder.close()

    locker = threading.Thread(target=hold_lock, name="sqlite-lock-holder")
    locker.start()
    try:
        assert taken.wait(timeout=10)
        await predict(client, 6)

        async def retried_twice() -> bool:
            return len({r.__dict__["attempt"] for r in retries(caplog)}) >= 2

        await eventually(retried_twice, timeout=30, interval=0.1)
    finally:
        release.set()
        locker.join(timeout=10)

    await stored_once(client, settings.database_url_for("trainer"), 9)
    assert all("database is locked" in r.__dict__["error"] for r in retries(caplog))
    assert all(r.exc_info is None for r in retries(caplog))


async def test_a_postgresql_restart_mid_traffic_loses_and_repeats_nothing(
    tmp_path: Path,
    nats_url: str,
    client: Bus,
    running: Running,
    private_postgres: PrivatePostgres,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A true restart of a private PostgreSQL cluster (initdb in tmp, its own port; the
    machine's shared server is not touched): `pg_ctl stop -m fast` while batches keep
    arriving, which terminates the trainer's sessions and rolls back what they were doing,
    then `pg_ctl start`. The pool's pre-ping replaces the dead connections; the messages that
    failed meanwhile are redelivered and applied once."""
    caplog.set_level(logging.WARNING, logger="driftloop.shared.bus")
    settings = service_settings(tmp_path, nats_url, database_url=private_postgres.url)
    await start_trainer(settings, client, running)
    await predict(client, 3)
    await stored_once(client, private_postgres.url, 3)
    sent: list[int] = []

    async def traffic() -> None:
        for n in range(12):
            await predict(client, 1)
            sent.append(n)
            await asyncio.sleep(0.1)  # pacing: batches keep arriving across the restart

    async def retried() -> bool:
        return bool(retries(caplog))

    flowing = asyncio.create_task(traffic())
    await eventually(lambda: len(sent) >= 3, timeout=10, interval=0.05)
    await asyncio.to_thread(private_postgres.stop)  # the trainer keeps handling meanwhile
    await eventually(retried, timeout=30, interval=0.1)
    await asyncio.to_thread(private_postgres.start)
    await flowing

    await stored_once(client, private_postgres.url, 15)
    assert all(r.exc_info is None for r in retries(caplog))
