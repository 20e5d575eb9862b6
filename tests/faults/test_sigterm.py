"""Issue 8, item 6: SIGTERM drains in-flight requests and messages within a bound and acks
nothing unfinished."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from faults.harness import CYCLE, ENOUGH_LABELS, Loop, assert_exactly_once, model_versions
from helpers import churn, eventually

from driftloop.cli.supervisor import pid_alive

pytestmark = pytest.mark.faults
DRAIN_BOUND = 30.0  # seconds a service may take to stop after SIGTERM
WAITING_FOR_CONNECTIONS = "Waiting for connections to close. (CTRL+C to force quit)"  # uvicorn


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
    """SIGTERM lands while requests are being answered: each request the gateway has begun
    reading is answered (uvicorn's graceful shutdown) and its record published before the
    exit. "Begun" is observable: each request asks `Expect: 100-continue`, and the gateway
    answers "100 Continue" once its handler reads the body; only then is the signal sent,
    and the bodies only once the gateway says it waits for its open connections. (A request
    on a connection the server has not read yet when it stops is refused at the transport:
    the client sees it, nothing was recorded; the test above covers those.)"""
    host, port = loop.gateway.removeprefix("http://").split(":")
    rows = churn(loop.rng, 5).drop(columns="churned").to_dict(orient="records")
    body = json.dumps({"instances": rows}).encode()
    head = (
        "POST /v1/models/churn/predict HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    begun = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head)
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        begun.append((reader, writer))

    closing = loop.logged("gateway", WAITING_FOR_CONNECTIONS)
    gateway = loop.terminate("gateway")
    # the bodies go once the gateway is shutting down and waits for these connections: it
    # stopped accepting, and only its graceful shutdown keeps them
    await eventually(lambda: loop.logged("gateway", WAITING_FOR_CONNECTIONS) > closing, timeout=30)
    answers = []
    for reader, writer in begun:
        writer.write(body)
        await writer.drain()
        answers.append(await asyncio.wait_for(reader.read(), timeout=30))  # then it closes
        writer.close()
    await stopped(gateway)
    await loop.restarted("gateway", gateway)

    statuses = [a.split(b"\r\n", 1)[0] for a in answers]
    assert statuses == [b"HTTP/1.1 200 OK"] * 4, answers
    loop.accepted_rows += 4 * len(rows)
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
