"""A prediction record over the bus's max_payload is cut into pieces that fit: every row in
exactly one piece, each piece a PredictionBatch of the record's fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from driftloop.gateway.domain.records import UnsplittableError, split_record
from driftloop.gateway.domain.validation import validate_ids
from driftloop.monitor.domain.live import VersionStats, add_request
from driftloop.shared.events import PredictionBatch


def record(rows: int, *, failed: bool = False, plan: str = "basic") -> PredictionBatch:
    return PredictionBatch(
        model="churn",
        version="3",
        route="champion",
        ids=[f"row-{i:05d}" for i in range(rows)],
        instances=[{"tenure": float(i), "plan": plan} for i in range(rows)],
        predictions=[] if failed else [i % 2 for i in range(rows)],
        latency_ms=2.5,
        at=datetime(2026, 12, 6, tzinfo=UTC),
        error="ValueError: no" if failed else None,
    )


def test_a_record_that_fits_is_published_as_it_is() -> None:
    payload = record(10).model_dump_json().encode()

    [piece] = split_record("b1", payload, limit=len(payload))

    assert (piece.msg_id, piece.payload, piece.fits) == ("b1", payload, True)


@pytest.mark.parametrize("failed", [False, True], ids=["answered", "failed"])
def test_a_record_over_the_limit_is_cut_into_pieces_that_fit_each_row_once(failed: bool) -> None:
    whole = record(2000, failed=failed)
    payload = whole.model_dump_json().encode()

    pieces = split_record(whole.batch_id, payload, limit=8192)

    parsed = [PredictionBatch.model_validate_json(p.payload) for p in pieces]
    assert len(pieces) > 1
    assert all(len(p.payload) <= 8192 and p.fits for p in pieces)
    assert [i for p in parsed for i in p.ids] == whole.ids
    assert [x for p in parsed for x in p.instances] == whole.instances
    assert [x for p in parsed for x in p.predictions] == whole.predictions
    assert [(p.part, p.parts) for p in parsed] == [(k, len(pieces)) for k in range(len(pieces))]
    assert {p.batch_id for p in parsed} == {whole.batch_id}
    assert {(p.version, p.at, p.latency_ms, p.error) for p in parsed} == {
        (whole.version, whole.at, whole.latency_ms, whole.error)
    }
    assert len({p.msg_id for p in pieces}) == len(pieces)
    assert split_record(whole.batch_id, payload, limit=8192) == pieces  # the same ids again


def test_a_row_over_the_limit_alone_is_a_piece_that_does_not_fit_after_the_others() -> None:
    whole = record(50)
    instances = [*whole.instances[:7], {"tenure": 7.0, "plan": "x" * 5000}, *whole.instances[8:]]
    big = whole.model_copy(update={"instances": instances})
    payload = big.model_dump_json().encode()

    pieces = split_record(big.batch_id, payload, limit=2048)

    parsed = [PredictionBatch.model_validate_json(p.payload) for p in pieces]
    assert [p.fits for p in pieces] == [True] * (len(pieces) - 1) + [False]
    assert parsed[-1].ids == ["row-00007"]
    assert sorted(i for p in parsed for i in p.ids) == whole.ids
    assert all(len(p.payload) <= 2048 for p in pieces if p.fits)


def test_a_payload_over_the_limit_that_is_no_record_cannot_be_cut() -> None:
    with pytest.raises(UnsplittableError, match="not JSON"):
        split_record("b", b"{" * 100, limit=10)


def test_a_record_in_pieces_is_one_request_and_each_of_its_rows_once() -> None:
    stats = VersionStats()

    for part, rows in enumerate([400, 400, 200]):
        stats = add_request(stats, rows=rows, latency_ms=12.0, failed=False, part=part)

    assert (stats.requests, stats.rows, sum(stats.latency)) == (1, 1000, 1)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["a", "b"], "one entry per instance (2 for 3)"),
        (["a", "b", "a"], "distinct: 'a' is given 2 times"),
        (["a", 2, "c"], "expected a string of 1 to 256 characters, got int"),
        (["a", "", "c"], "got 0 characters"),
        ("abc", "expected a list of strings, got str"),
    ],
    ids=["count", "duplicate", "type", "empty", "not-a-list"],
)
def test_prediction_ids_are_refused_naming_the_field(ids: object, message: str) -> None:
    [problem] = validate_ids(ids, 3, ("body", "parameters", "ids"))

    assert message in problem.msg
    assert problem.loc[:3] == ("body", "parameters", "ids")


def test_distinct_prediction_ids_one_per_row_are_accepted() -> None:
    assert validate_ids(["a", "b", "c"], 3, ("body", "ids")) == []
