"""Counting the records a stream discarded before a consumer received them (shared/discards.py):
a jump in stream sequences is a loss only below the stream's first sequence."""

from __future__ import annotations

import pytest

from driftloop.shared.discards import MAX_GAPS, SequenceGaps


@pytest.mark.parametrize(
    ("handed", "first_seq", "lost"),
    [
        ([1, 2, 3], 1, 0),
        ([4, 5], 1, 0),  # 1-3 still in the stream: another subject's or replica's
        ([9, 10], 9, 5),  # 4-8 gone before they were handed
        ([9, 10], 12, 5),  # discarded after 9 was handed: 4-8 count, 9 and 10 were handed
        ([5, 7, 9], 8, 2),  # narrower filter: 4 and 6 gone (upper bound: may be others')
        ([4, 2, 5], 100, 0),  # a redelivery (2) is no jump
    ],
    ids=[
        "contiguous",
        "jump-still-stored",
        "jump-discarded",
        "discarded-later",
        "jumps-partly-discarded",
        "redelivery",
    ],
)
def test_jumps_count_as_lost_only_below_the_first_sequence(
    handed: list[int], first_seq: int, lost: int
) -> None:
    gaps = SequenceGaps(last=3)

    for sequence in handed:
        gaps.handed(sequence)

    assert gaps.lost(first_seq) == lost


def test_judged_jumps_are_forgotten() -> None:
    gaps = SequenceGaps(last=0)
    gaps.handed(5)

    assert gaps.lost(1) == 0
    assert not gaps.pending
    assert gaps.lost(100) == 0


def test_too_many_jumps_merge_without_losing_one() -> None:
    gaps = SequenceGaps(last=0)

    for sequence in range(2, 2 * (MAX_GAPS + 5), 2):  # every other sequence skipped
        gaps.handed(sequence)

    assert len(gaps.gaps) <= MAX_GAPS
    assert gaps.gaps[-1] == (2 * (MAX_GAPS + 4) - 1,) * 2
    assert gaps.lost(1) == 0
