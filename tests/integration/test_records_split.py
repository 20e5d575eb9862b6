"""A prediction record over the server's max_payload no longer stops record delivery: it is
published in pieces that fit (every row once, one request counted), a row no message can carry
is dead-lettered and counted, and the records after it are still delivered. A real nats-server
started with max_payload 64 KiB, a real gateway over HTTP, the real monitor consuming."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually, terminate
from serving import ROW, monitor_samples, serve_champion, start_gateway

from driftloop.cli.supervisor import start_nats
from driftloop.monitor.main import VERSION_SUBJECT
from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import DEAD_LETTER_ERROR, DEADLETTER_STREAM, Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import PredictionBatch

MAX_PAYLOAD = 64 * 1024


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server whose max_payload is 64 KiB (the default is 1 MiB)."""
    conf = tmp_path / "nats.conf"
    conf.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    proc, url = start_nats(tmp_path / "nats", tmp_path / "nats.log", conf=conf)
    yield url
    terminate(proc)


@pytest.fixture
def db_url() -> None:
    """The monitor on its SQLite file."""
    return None


@pytest.fixture
async def records(bus: Bus) -> AsyncIterator[list[tuple[int, PredictionBatch]]]:
    """Every prediction record published from now on, with its size in bytes."""
    seen: list[tuple[int, PredictionBatch]] = []

    async def keep(msg: Any) -> None:
        seen.append((len(msg.data), PredictionBatch.model_validate_json(msg.data)))

    sub = await bus.nc.subscribe("driftloop.predictions.>", cb=keep)
    yield seen
    await sub.unsubscribe()


def rows_delivered(seen: list[tuple[int, PredictionBatch]]) -> Counter[str]:
    return Counter(i for _, record in seen for i in record.ids)


async def test_a_record_over_max_payload_is_delivered_in_pieces_and_later_ones_follow(
    settings: Settings, bus: Bus, running: Any, records: list[tuple[int, PredictionBatch]]
) -> None:
    assert bus.nc.max_payload == MAX_PAYLOAD
    await serve_champion(settings, bus)
    running(monitor(settings))
    gateway = await start_gateway(settings, running)
    ids = [f"{i:05d}-" + "x" * 194 for i in range(2000)]  # a record of about 600 KB

    big = await gateway.client.post(
        "/v1/models/churn/predict", json={"instances": [ROW] * len(ids), "ids": ids}
    )
    after = await gateway.client.post(
        "/v1/models/churn/predict", json={"instances": [ROW], "ids": ["after"]}
    )

    assert (big.status_code, after.status_code) == (200, 200)

    async def delivered() -> bool:
        counts = rows_delivered(records)
        assert all(counts[i] == 1 for i in [*ids, "after"]), len(counts)
        return gateway.records.pending == 0

    await eventually(delivered, timeout=30)
    pieces = [(size, r) for size, r in records if r.ids[0] in ids]
    assert len(pieces) > 1
    assert all(size <= MAX_PAYLOAD for size, _ in pieces)
    assert sorted(r.part for _, r in pieces) == list(range(len(pieces)))
    assert {r.parts for _, r in pieces} == {len(pieces)}

    async def stored() -> dict[str, Any]:
        found = monitor_samples(settings)
        assert set(ids) | {"after"} <= set(found), len(found)
        answer = await bus.request(VERSION_SUBJECT, {"model": "churn", "version": "1"})
        return dict(answer["routes"]["champion"])

    champion = await eventually(stored, timeout=30)
    # the start-up check's request, the big one and the one after: each counted once
    assert (champion["requests"], champion["rows"], champion["timed"]) == (3, 2002, 3)
    assert gateway.records.dead_lettered == 0


async def test_a_row_no_message_can_carry_is_dead_lettered_and_counted_and_the_rest_delivered(
    settings: Settings, bus: Bus, running: Any, records: list[tuple[int, PredictionBatch]]
) -> None:
    await serve_champion(settings, bus)
    gateway = await start_gateway(settings, running, max_string_length=100_000)
    huge = ROW | {"plan": "x" * 70_000}  # more than a message may carry, alone

    poisoned = await gateway.client.post(
        "/v1/models/churn/predict",
        json={"instances": [ROW, huge, ROW], "ids": ["first", "huge", "third"]},
    )
    later = [
        await gateway.client.post(
            "/v1/models/churn/predict", json={"instances": [ROW], "ids": [f"later-{n}"]}
        )
        for n in range(3)
    ]

    assert [r.status_code for r in [poisoned, *later]] == [200] * 4

    async def delivered() -> bool:
        counts = rows_delivered(records)
        expected = ["first", "third", "later-0", "later-1", "later-2"]
        assert all(counts[i] == 1 for i in expected), counts
        return gateway.records.pending == 0

    await eventually(delivered, timeout=30)
    assert "huge" not in rows_delivered(records)
    assert gateway.records.dead_lettered == 1
    assert await gateway.counter("driftloop_records_dead_lettered_total", model="churn") == 1
    [(subject, _msg_id, payload, error)] = gateway.records.spool.dead_letters()
    assert subject == "driftloop.predictions.churn"
    assert PredictionBatch.model_validate_json(payload).ids == ["huge"]
    assert "UnsplittableError" in error
    letter = await bus.js.get_last_msg(DEADLETTER_STREAM, "driftloop.deadletter.churn.>")
    assert "UnsplittableError" in (letter.headers or {})[DEAD_LETTER_ERROR]
