"""Issue 8, item 6: SIGTERM drains in-flight requests and messages within a bound and acks
nothing unfinished."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from faults.harness import CYCLE, ENOUGH_LABELS, Loop, assert_exactly_once, model_versions
from helpers import eventually

from driftloop.cli.supervisor import pid_alive

pytestmark = pytest.mark.faults
DRAIN_BOUND = 30.0  # seconds a service may take to stop after SIGTERM


async def stopped(pid: int) -> None:
    async def gone() -> bool:
        return not pid_alive(pid)

    await eventually(gone, timeout=DRAIN_BOUND, interval=0.1)


async def test_sigterm_delivers_the_records_of_every_answered_request(loop: Loop) -> None:
    """The gateway publishes the records of every request it answered before it exits; the
    monitor, stopped mid-stream, acks only the batches it stored."""
    async with httpx.AsyncClient(base_url=loop.gateway, timeout=60) as http:
        await loop.traffic(http, 2)
        in_flight = [asyncio.create_task(loop.predict_once(http)) for _ in range(12)]
        # the signal lands once one is answered: the others are on the wire, being answered,
        # or not sent yet (refused at the transport)
        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        monitor = loop.terminate("monitor")
        gateway = loop.terminate("gateway")
        answers = await asyncio.gather(*in_flight)
        await stopped(gateway)
        await stopped(monitor)
        await loop.restarted("gateway", gateway)
        await loop.restarted("monitor", monitor)
        await loop.traffic(http, 2)

    # answered, or refused at the transport (the client knows): never a 5xx
    assert all(a == 200 or isinstance(a, str) for a in answers), answers
    assert 200 in answers
    await loop.stored_everything()


async def test_sigterm_answers_every_request_already_sent(loop: Loop) -> None:
    """SIGTERM lands while eleven requests are on the wire or being answered: each one is
    answered (uvicorn's graceful shutdown) and its record published before the exit."""
    async with httpx.AsyncClient(base_url=loop.gateway, timeout=60) as http:
        await loop.traffic(http, 1)  # the client's connections are open
        in_flight = [asyncio.create_task(loop.predict_once(http, rows=500)) for _ in range(12)]
        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        gateway = loop.terminate("gateway")  # the others are sent, queued or being answered
        answers = await asyncio.gather(*in_flight)
        await stopped(gateway)
        await loop.restarted("gateway", gateway)

    assert answers == [200] * 12, answers
    await loop.stored_everything()


async def test_sigterm_mid_training_acks_nothing_unfinished(loop: Loop) -> None:
    async with httpx.AsyncClient(base_url=loop.gateway, timeout=30) as http:
        await loop.traffic(http, ENOUGH_LABELS)
    versions = model_versions(loop)
    delivered = await loop.delivered("trainer-RetrainRequested")

    cycle_id = await loop.retrain()

    async def training() -> bool:
        return await loop.delivered("trainer-RetrainRequested") > delivered

    await eventually(training, timeout=30, interval=0.05)
    trainer = loop.terminate("trainer")
    await stopped(trainer)
    await loop.restarted("trainer", trainer)

    assert await loop.ended(cycle_id) == CYCLE
    await assert_exactly_once(loop, cycle_id, versions)
