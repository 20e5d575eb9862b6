"""The gateway's record spool: bounded, on disk, kept across a restart, in order."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
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
