"""The gateway's record spool: bounded, on disk, kept across a restart, in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from driftloop.gateway.adapters.records import RecordPublisher
from driftloop.shared.events import PredictionBatch


def record(n: int) -> PredictionBatch:
    return PredictionBatch(
        model="churn",
        version="1",
        route="champion",
        ids=[f"id-{n}"],
        instances=[{"tenure": n}],
        predictions=[0],
        latency_ms=1.0,
        at=datetime.now(UTC),
    )


def publisher(path: Path, capacity: int, dropped: Counter | None = None) -> RecordPublisher:
    bus: Any = None  # offering never touches the bus: records wait on disk for `run`
    return RecordPublisher(bus, capacity=capacity, dropped=dropped, spool=path)


def test_a_full_spool_refuses_and_counts(tmp_path: Path) -> None:
    dropped = Counter("dropped", "", ["model"], registry=CollectorRegistry())
    spool = publisher(tmp_path / "spool.sqlite", capacity=2, dropped=dropped)

    kept = [spool.offer(record(n)) for n in range(3)]

    assert kept == [True, True, False]
    assert dropped.labels("churn")._value.get() == 1
    spool.close()


def test_spooled_records_outlive_the_process_in_order(tmp_path: Path) -> None:
    first = publisher(tmp_path / "spool.sqlite", capacity=10)
    for n in range(3):
        first.offer(record(n))
    first.close()  # as if killed: nothing was published

    again = publisher(tmp_path / "spool.sqlite", capacity=10)

    assert again.pending == 3
    assert again.spool is not None
    rows = again.spool.oldest()
    assert [PredictionBatch.model_validate_json(r[3]).ids for r in rows] == [
        ["id-0"],
        ["id-1"],
        ["id-2"],
    ]
    assert {r[1] for r in rows} == {"driftloop.predictions.churn"}
    again.close()


class FlakyBus:
    """Stands in for the bus's publish: refuses `id-1`'s record the first time, records the
    rest, and counts how many publishes were in flight at once."""

    def __init__(self) -> None:
        self.nc = SimpleNamespace(max_payload=1024 * 1024)  # the server's announced limit
        self.published: list[str] = []
        self.refused: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def publish_raw(self, subject: str, payload: bytes, *, msg_id: str) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # the ack's round trip
            ids = PredictionBatch.model_validate_json(payload).ids
            if ids == ["id-1"] and not self.refused:
                self.refused.append(msg_id)
                raise TimeoutError("no ack")
            self.published.append(ids[0])
        finally:
            self.in_flight -= 1


async def test_spooled_records_are_published_together_and_a_failed_one_again(
    tmp_path: Path,
) -> None:
    bus = FlakyBus()
    spool = RecordPublisher(bus, capacity=10, spool=tmp_path / "spool.sqlite")  # type: ignore[arg-type]
    for n in range(5):
        spool.offer(record(n))
    running = asyncio.create_task(spool.run())

    await spool.flush(timeout=10)

    running.cancel()
    assert spool.pending == 0
    assert sorted(bus.published) == [f"id-{n}" for n in range(5)]  # each once
    assert len(bus.refused) == 1
    assert bus.most_in_flight == 5  # not one ack round trip per record
    spool.close()


async def test_records_kept_in_one_turn_are_written_together_each_before_its_answer(
    tmp_path: Path,
) -> None:
    spool = publisher(tmp_path / "spool.sqlite", capacity=10)
    assert spool.spool is not None
    writes: list[int] = []
    append_all = spool.spool.append_all
    spool.spool.append_all = lambda rows: (writes.append(len(rows)), append_all(rows))[1]  # type: ignore[method-assign]
    on_disk: list[int] = []

    async def request(n: int) -> bool:
        kept = await spool.keep(record(n))
        on_disk.append(await asyncio.to_thread(count_rows, tmp_path / "spool.sqlite"))
        return kept

    kept = await asyncio.gather(*(request(n) for n in range(5)))
    kept.append(await spool.keep(record(5)))  # a later turn: a group of its own

    assert kept == [True] * 6
    assert writes == [5, 1]  # one transaction per turn, not one per record
    assert min(on_disk) >= 5  # no request went on before its record was on disk
    assert spool.pending == 6
    spool.close()


async def test_keep_refuses_past_capacity_counting_the_group_not_yet_written(
    tmp_path: Path,
) -> None:
    dropped = Counter("dropped", "", ["model"], registry=CollectorRegistry())
    spool = publisher(tmp_path / "spool.sqlite", capacity=2, dropped=dropped)

    kept = await asyncio.gather(*(spool.keep(record(n)) for n in range(3)))

    assert kept == [True, True, False]
    assert dropped.labels("churn")._value.get() == 1
    assert spool.pending == 2
    spool.close()


async def test_a_failed_group_write_fails_each_of_its_requests(tmp_path: Path) -> None:
    spool = publisher(tmp_path / "spool.sqlite", capacity=10)
    assert spool.spool is not None
    spool.spool.db.close()  # the disk write fails (as a full disk would)

    outcomes = await asyncio.gather(
        *(spool.keep(record(n)) for n in range(3)), return_exceptions=True
    )

    assert all(isinstance(o, Exception) for o in outcomes)
    assert spool.pending == 0


def count_rows(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM records").fetchone()[0])


async def test_a_request_is_answered_before_its_record_is_read_back_to_publish(
    tmp_path: Path,
) -> None:
    bus = FlakyBus()
    spool = RecordPublisher(bus, capacity=10, spool=tmp_path / "spool.sqlite")  # type: ignore[arg-type]
    assert spool.spool is not None
    answered: list[bool] = []
    reads: list[bool] = []  # at each read of the spool by the publisher: answered yet?
    oldest = spool.spool.oldest
    spool.spool.oldest = lambda n: (reads.append(bool(answered)), oldest(n))[1]  # type: ignore[method-assign]
    running = asyncio.create_task(spool.run())
    await asyncio.sleep(0)  # the publisher has read the empty spool and waits for records

    kept = await spool.keep(record(0))
    answered.append(True)  # the request's next step: its answer
    await spool.flush(timeout=10)

    running.cancel()
    assert kept
    assert reads[0] is False  # the empty spool, before the request
    assert reads[1] is True  # the record was on disk and its request answered first
    assert bus.published == ["id-0"]
    spool.close()
