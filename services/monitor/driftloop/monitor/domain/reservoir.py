"""A bounded uniform sample of a stream (reservoir sampling), a batch at a time: pure numpy.

Algorithm R (Vitter 1985): the first `capacity` values are kept; the t-th value of the stream
after them replaces a uniformly chosen kept one with probability capacity / t. After any
number of values the reservoir is a uniform sample without replacement of all of them. A batch
is one vector: one uniform draw per value decides whether it is kept, one integer draw its
slot; of several values drawn for the same slot the latest wins, as one value at a time would.
The caller passes the generator, so a seeded one makes the sample reproducible.

Stored form (text, appended to rather than rewritten, so a batch costs what it adds, not what
the reservoir holds): a list of segments, each base64 of little-endian float64. "v..."
segments are kept values in order; "r..." segments are (slot, value) pairs of replacements,
applied in order. Once the replacements outnumber `capacity`, `fold` makes one "v" segment of
the lot, so the stored form stays under about three times `capacity` values however long the
stream.
"""

from __future__ import annotations

import base64

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

CAPACITY = 2_000  # values kept per numeric feature and window
SEED = 20_251_125  # the windows' sampling seed: the same traffic gives the same sample
VALUES, REPLACEMENTS = "v", "r"


def extend(
    seen: int,
    values: FloatArray,
    *,
    capacity: int,
    rng: np.random.Generator | None,
) -> list[str]:
    """The segments to append when `values` (in arrival order) join the reservoir of the
    `seen` values so far. `rng` may be None while the values still fit."""
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, not {capacity}")
    room = max(capacity - seen, 0)
    head, rest = values[:room], values[room:]
    out = [VALUES + encode(head)] if head.size else []
    if rest.size == 0:
        return out
    if rng is None:
        raise ValueError("a full reservoir needs a random generator")
    # the i-th of `rest` is value number t = seen + len(head) + i + 1 of the stream
    t = seen + head.size + np.arange(1, rest.size + 1, dtype=np.float64)
    chosen = rng.random(rest.size) * t < capacity
    slots = rng.integers(0, capacity, int(chosen.sum())).astype(np.float64)
    if slots.size:
        out.append(REPLACEMENTS + encode(np.column_stack((slots, rest[chosen])).ravel()))
    return out


def replacements(segments: list[str]) -> int:
    """How many replacements the segments hold, without decoding them."""
    return sum(_size(s) for s in segments if s.startswith(REPLACEMENTS)) // 2


def fold(segments: list[str]) -> list[str]:
    """The same reservoir as one values segment (no replacements left)."""
    return [VALUES + encode(sample(segments))] if segments else []


def sample(segments: list[str]) -> FloatArray:
    """The values the stored reservoir holds (replacements applied)."""
    kept_parts = [decode(s[1:]) for s in segments if s.startswith(VALUES)]
    kept = np.concatenate(kept_parts) if kept_parts else np.empty(0)
    pairs = [decode(s[1:]) for s in segments if s.startswith(REPLACEMENTS)]
    if not pairs:
        return kept
    replaced = np.concatenate(pairs).reshape(-1, 2)
    slots, values = replaced[::-1, 0].astype(np.int64), replaced[::-1, 1]
    # the last replacement of a slot is the one that stays: the first in reversed order
    unique, first = np.unique(slots, return_index=True)
    kept[unique] = values[first]
    return kept


def encode(values: FloatArray) -> str:
    """Base64 of little-endian float64: 8 bytes a value, about a third of a JSON list of
    floats, and no parsing per value."""
    return base64.b64encode(np.asarray(values, dtype="<f8").tobytes()).decode("ascii")


def decode(text: str) -> FloatArray:
    """`encode`'s inverse."""
    return np.frombuffer(base64.b64decode(text), dtype="<f8").astype(np.float64)


def _size(segment: str) -> int:
    """How many float64 a segment holds, without decoding it."""
    body = len(segment) - 1
    return (body // 4 * 3 - segment.count("=", -2)) // 8
