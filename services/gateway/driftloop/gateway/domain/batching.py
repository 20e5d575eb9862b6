"""Adaptive batching: which queued requests one predict call serves, and each request's share
of its answers. Pure: the asyncio side is adapters/batcher.py."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class BatchBounds:
    """How far requests for one model version are grouped: at most `max_rows` rows per
    predict call (0 or 1: every request predicted alone), and a batch's first request waits
    at most `max_wait_s` seconds for more to join it."""

    max_rows: int = 32
    max_wait_s: float = 0.002

    def __post_init__(self) -> None:
        if self.max_rows < 0 or self.max_wait_s < 0 or not math.isfinite(self.max_wait_s):
            raise ValueError("batch bounds must be finite and not negative")

    @property
    def enabled(self) -> bool:
        return self.max_rows > 1


def take(sizes: Sequence[int], max_rows: int) -> int:
    """How many requests from the front of the queue (`sizes`: rows of each, oldest first)
    the next predict call serves: in arrival order while their rows fit in `max_rows`, and
    always the first one (a request over the bound is predicted alone, never split). 0 when
    the queue is empty."""
    if not sizes:
        return 0
    rows, count = sizes[0], 1
    while count < len(sizes) and rows + sizes[count] <= max_rows:
        rows += sizes[count]
        count += 1
    return count


def full(sizes: Sequence[int], max_rows: int) -> bool:
    """Whether the queue already holds a whole batch: waiting cannot make the next one
    bigger (its front requests fill `max_rows`, or the next request would not fit)."""
    count = take(sizes, max_rows)
    return count < len(sizes) or sum(sizes[:count]) >= max_rows


def keep_gathering(
    sizes: Sequence[int],
    *,
    quiet: int,
    waited_s: float,
    bounds: BatchBounds,
    patience: int = 3,
    nobody_coming: bool = False,
) -> bool:
    """Whether the batch forming at the front of the queue (`sizes`) waits one more turn of
    the event loop for requests already received but not queued yet (a request reaches the
    queue a few turns after its bytes arrive). No when it is full, when it has waited
    `bounds.max_wait_s`, after `patience` turns in a row that queued nothing (`quiet`): a
    lone request is not held for requests that are not there; nor when `nobody_coming` (every
    open connection already has its request inside: occupancy.py)."""
    if not bounds.enabled or nobody_coming or full(sizes, bounds.max_rows):
        return False
    return waited_s < bounds.max_wait_s and quiet < patience


def split(sizes: Sequence[int], values: Sequence[T]) -> list[list[T]]:
    """Each request's consecutive share of a batch's `values` (one per row, in queue order)."""
    if sum(sizes) != len(values):
        raise ValueError(f"{len(values)} answers for {sum(sizes)} rows")
    out, at = [], 0
    for size in sizes:
        out.append(list(values[at : at + size]))
        at += size
    return out


def finite(predictions: Sequence[Any], probabilities: Sequence[Sequence[float]] | None) -> bool:
    """No NaN or infinity among a model's answers (JSON cannot carry them, and they are no
    prediction anyone can use)."""
    rows = [predictions, *(probabilities or [])]
    return all(not isinstance(v, float) or math.isfinite(v) for row in rows for v in row)
