"""Records a bounded stream discards before a consumer read them are counted, on a real
nats-server: in the bus's `discarded`, its Prometheus counter (scraped over HTTP) and the
monitor's status; a consumer whose filter skips other subjects (the trainer's) counts no
loss for the sequences it was never meant to get."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import helpers
import httpx
import nats
import numpy as np
import pytest
from helpers import eventually
from monitoring import MODEL, T0, predict, start_monitor

from driftloop.cli.supervisor import free_port
from driftloop.monitor.main import STATUS_SUBJECT
from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import PREDICTIONS_STREAM, PredictionBatch

LIMIT = 8192  # bytes the predictions stream keeps: about twenty one-row records


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"predictions_max_bytes": LIMIT})


def record(route: str = "champion") -> PredictionBatch:
    return PredictionBatch(
        model=MODEL,
        version="1",
        route=route,
        ids=[str(uuid.uuid4())],
        instances=[{"tenure": 1.0, "plan": "basic"}],
        predictions=[0],
        latency_ms=1.0,
        at=datetime.now(UTC),
    )


async def publish(bus: Bus, n: int, *, shadow_every: int = 0) -> None:
    for i in range(n):
        shadow = bool(shadow_every) and i % shadow_every == 0
        subject = f"driftloop.predictions.{MODEL}" + (".shadow" if shadow else "")
        batch = record("shadow" if shadow else "champion")
        await bus.publish_record(subject, batch, msg_id=batch.batch_id)


async def first_seq(bus: Bus) -> int:
    return int((await bus.js.stream_info(PREDICTIONS_STREAM)).state.first_seq)


async def consume(
    settings: Settings, subject: str, handled: list[PredictionBatch], **bus_settings: Any
) -> tuple[Bus, asyncio.Task[None]]:
    """A consumer service on its own connection: durable `t-predictions` over `subject`."""
    connection = connect_bus(settings.model_copy(update=bus_settings), service="t")
    consumer = await connection.__aenter__()

    async def handler(batch: PredictionBatch) -> None:
        handled.append(batch)

    consumer.subscribe_records(
        PREDICTIONS_STREAM, subject, PredictionBatch, handler, durable="predictions"
    )

    async def until_stopped() -> None:
        try:
            await consumer.run_until_stopped()
        finally:
            await connection.__aexit__(None, None, None)

    return consumer, asyncio.create_task(until_stopped())


async def stop(consumer: Bus, task: asyncio.Task[None]) -> None:
    consumer.stop()
    await task


async def test_records_discarded_while_the_consumer_was_stopped_are_counted_and_exported(
    settings: Settings, bus: Bus
) -> None:
    handled: list[PredictionBatch] = []
    consumer, task = await consume(settings, "driftloop.predictions.>", handled)
    await publish(bus, 3)
    await eventually(lambda: len(handled) == 3, timeout=10)
    await stop(consumer, task)

    await publish(bus, 60)  # while nobody reads: the stream keeps its newest ~twenty
    lost = await first_seq(bus) - 1 - 3
    assert lost > 0
    port = free_port()
    consumer, task = await consume(settings, "driftloop.predictions.>", handled, metrics_port=port)

    try:
        await eventually(lambda: len(handled) == 3 + 60 - lost, timeout=10)
        await eventually(lambda: consumer.discarded == {"t-predictions": lost}, timeout=10)
        async with httpx.AsyncClient() as client:
            scraped = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
        series = (
            f'driftloop_records_discarded_total{{consumer="t-predictions",'
            f'stream="{PREDICTIONS_STREAM}"}} {float(lost)}'
        )
        assert series in scraped
    finally:
        await stop(consumer, task)


async def test_a_filter_that_skips_other_subjects_counts_only_what_was_discarded(
    settings: Settings, bus: Bus
) -> None:
    handled: list[PredictionBatch] = []
    consumer, task = await consume(settings, "driftloop.predictions.*", handled)  # no shadows
    await publish(bus, 9, shadow_every=3)  # shadow, served, served, shadow, ...: jumps of one
    await eventually(lambda: len(handled) == 6, timeout=10)
    assert consumer.discarded == {"t-predictions": 0}
    await stop(consumer, task)
    state = (await bus.js.stream_info(PREDICTIONS_STREAM)).state
    assert state.first_seq == 1  # the skipped shadows are still there: not lost
    seen = state.last_seq

    await publish(bus, 60)
    lost = await first_seq(bus) - 1 - seen
    consumer, task = await consume(settings, "driftloop.predictions.*", handled)

    try:
        await eventually(lambda: len(handled) == 6 + 60 - lost, timeout=10)
        # the skipped shadows were judged (the stream still held them) or, when the consumer
        # stopped first, forgotten: only the served records the stream dropped count
        await eventually(lambda: consumer.discarded == {"t-predictions": lost}, timeout=10)
    finally:
        await stop(consumer, task)


async def test_the_monitor_status_shows_records_discarded_while_it_was_down(
    settings: Settings, bus: Bus, running: Any
) -> None:
    await start_monitor(settings, bus, running, "  window: 100000\n")
    rng = np.random.default_rng(3)
    await predict(bus, 2, T0, rng)
    await predict(bus, 2, T0, rng)

    async def rows_seen(n: int) -> bool:
        status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        return bool(status.get("rows_seen") == n)

    await eventually(lambda: rows_seen(4), timeout=30)
    await helpers.stop_services(helpers.SERVICE_TASKS[-1:])  # the monitor: down
    for _ in range(30):
        await predict(bus, 2, T0, rng)
    lost = await first_seq(bus) - 1 - 2
    assert lost > 0
    running(monitor(settings))

    async def status_shows_loss() -> bool:
        try:
            status = await bus.request(STATUS_SUBJECT, {"model": MODEL})
        except (TimeoutError, nats.errors.Error):  # not answering yet
            return False
        assert status["records_discarded"] == {"monitor-predictions": lost, "monitor-feedback": 0}
        return True

    await eventually(status_shows_loss, timeout=30)
    await eventually(lambda: rows_seen(4 + 2 * (30 - lost)), timeout=30)
