"""Which queued requests one predict call serves, and how its answers go back (pure)."""

from __future__ import annotations

import math

import pytest

from driftloop.gateway.domain.batching import (
    BatchBounds,
    finite,
    full,
    keep_gathering,
    split,
    take,
)

BOUNDS = BatchBounds(max_rows=8, max_wait_s=0.002)


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([], 0),
        ([1], 1),
        ([1, 1, 1], 3),
        ([3, 3, 3], 2),
        ([4, 4, 1], 2),
        ([8, 1], 1),
        ([20, 1], 1),
        ([1, 20, 1], 1),
        ([1] * 12, 8),
    ],
    ids=[
        "empty",
        "one",
        "all-fit",
        "stops-before-overflow",
        "exactly-full",
        "first-fills-it",
        "oversized-request-alone",
        "oversized-waits-its-turn",
        "max-rows-of-ones",
    ],
)
def test_take_fills_the_batch_in_arrival_order_without_splitting_a_request(
    sizes: list[int], expected: int
) -> None:
    assert take(sizes, 8) == expected


def test_take_never_skips_ahead_to_a_request_that_would_fit() -> None:
    count = take([6, 4, 1], 8)

    assert count == 1  # the 1-row request behind the 4-row one waits: answers keep order


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [([1, 1], False), ([4, 4], True), ([6, 4], True), ([20], True), ([], False)],
    ids=["room-left", "exactly-full", "next-does-not-fit", "oversized", "empty"],
)
def test_full_when_waiting_cannot_grow_the_batch(sizes: list[int], expected: bool) -> None:
    assert full(sizes, 8) is expected


@pytest.mark.parametrize(
    ("sizes", "quiet", "waited_s", "bounds", "expected"),
    [
        ([1], 0, 0.0, BOUNDS, True),
        ([1], 2, 0.0, BOUNDS, True),
        ([1], 3, 0.0, BOUNDS, False),
        ([1, 1], 0, 0.002, BOUNDS, False),
        ([4, 4], 0, 0.0, BOUNDS, False),
        ([1], 0, 0.0, BatchBounds(max_rows=1), False),
        ([1], 0, 0.0, BatchBounds(max_rows=0), False),
        ([1], 0, 0.0, BatchBounds(max_rows=8, max_wait_s=0), False),
    ],
    ids=[
        "just-queued",
        "quiet-but-patient",
        "quiet-too-long",
        "waited-max-wait",
        "full",
        "off-at-one-row",
        "off-at-zero",
        "no-wait",
    ],
)
def test_keep_gathering_stops_when_full_quiet_or_out_of_time(
    sizes: list[int], quiet: int, waited_s: float, bounds: BatchBounds, expected: bool
) -> None:
    assert keep_gathering(sizes, quiet=quiet, waited_s=waited_s, bounds=bounds) is expected


def test_a_lone_request_waits_only_a_few_quiet_turns_never_the_max_wait() -> None:
    turns = 0
    while keep_gathering([1], quiet=turns, waited_s=0.0, bounds=BOUNDS):
        turns += 1

    assert turns == 3


def test_split_gives_each_request_its_own_rows_in_order() -> None:
    shares = split([2, 1, 3], ["a", "b", "c", "d", "e", "f"])

    assert shares == [["a", "b"], ["c"], ["d", "e", "f"]]


def test_split_refuses_answers_that_do_not_match_the_rows() -> None:
    with pytest.raises(ValueError, match="5 answers for 6 rows"):
        split([2, 1, 3], [0, 1, 2, 3, 4])


@pytest.mark.parametrize(
    ("predictions", "probabilities", "expected"),
    [
        ([0, 1], [[0.4, 0.6], [1.0, 0.0]], True),
        (["yes", "no"], None, True),
        ([1.5, math.nan], None, False),
        ([0], [[math.inf, 0.0]], False),
        ([0], [[0.5, -math.inf]], False),
    ],
    ids=["numbers", "labels", "nan-prediction", "inf-probability", "minus-inf"],
)
def test_finite_refuses_nan_and_infinity(
    predictions: list[object], probabilities: list[list[float]] | None, expected: bool
) -> None:
    assert finite(predictions, probabilities) is expected


@pytest.mark.parametrize(
    ("rows", "wait"), [(-1, 0.0), (8, -0.001), (8, math.inf)], ids=["rows", "wait", "inf"]
)
def test_bounds_refuse_negative_or_infinite_values(rows: int, wait: float) -> None:
    with pytest.raises(ValueError, match="batch bounds"):
        BatchBounds(max_rows=rows, max_wait_s=wait)


def test_a_forming_batch_goes_at_once_when_nobody_can_come() -> None:
    assert keep_gathering([1], quiet=0, waited_s=0.0, bounds=BOUNDS)
    assert not keep_gathering([1], quiet=0, waited_s=0.0, bounds=BOUNDS, nobody_coming=True)
