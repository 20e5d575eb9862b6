"""Per-version live statistics the deployer's analysis reads: traffic, errors, latency
percentiles, disagreement with the champion. Pure; bounded (a fixed latency histogram)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

# Log-spaced latency buckets (upper bounds, ms): 0.05 ms to ~100 s, ratio 1.2 (error <= 20 %).
LATENCY_EDGES_MS: tuple[float, ...] = tuple(0.05 * 1.2**i for i in range(80))


class VersionStats(BaseModel):
    """Counters of one (model, version, route) since its stage started."""

    model_config = ConfigDict(frozen=True)
    requests: int = 0
    rows: int = 0
    errors: int = 0  # rows the version failed to answer
    latency: list[int] = []  # requests per LATENCY_EDGES_MS bucket (+1 overflow)
    compared: int = 0  # shadow/canary rows whose champion answer was known
    disagreed: int = 0


def add_request(
    stats: VersionStats,
    *,
    rows: int,
    latency_ms: float | None,
    failed: bool,
    part: int | None = None,
) -> VersionStats:
    """Count a request; its latency joins the histogram when it was timed (a shadow times
    the first of the jobs it answers together, not the others). A record published in pieces
    (`part` set) is one request: counted, with its latency, by its first piece; rows by each."""
    first = not part
    counts = list(stats.latency) or [0] * (len(LATENCY_EDGES_MS) + 1)
    if latency_ms is not None and first:
        counts[int(np.searchsorted(LATENCY_EDGES_MS, latency_ms, side="left"))] += 1
    return stats.model_copy(
        update={
            "requests": stats.requests + (1 if first else 0),
            "rows": stats.rows + rows,
            "errors": stats.errors + (rows if failed else 0),
            "latency": counts,
        }
    )


def add_comparison(stats: VersionStats, *, compared: int, disagreed: int) -> VersionStats:
    return stats.model_copy(
        update={"compared": stats.compared + compared, "disagreed": stats.disagreed + disagreed}
    )


def latency_percentile(counts: list[int], q: float) -> float | None:
    """The q-th percentile (0-100) of request latency in ms: the upper edge of its bucket."""
    total = sum(counts)
    if total == 0:
        return None
    rank = math.ceil(total * q / 100.0)
    running = 0
    for i, count in enumerate(counts):
        running += count
        if running >= rank:
            return LATENCY_EDGES_MS[i] if i < len(LATENCY_EDGES_MS) else float("inf")
    return float("inf")  # pragma: no cover - the loop always reaches rank


def disagreement(predicted: list[Any], champion: list[Any]) -> int:
    """How many answers differ from the champion's (compared as text, as labels are)."""
    return sum(str(a) != str(b) for a, b in zip(predicted, champion, strict=True))


def summary(stats: VersionStats) -> dict[str, Any]:
    counts = list(stats.latency)
    return {
        "requests": stats.requests,
        "rows": stats.rows,
        "errors": stats.errors,
        "error_rate": stats.errors / stats.rows if stats.rows else None,
        "latency_ms": {f"p{q}": latency_percentile(counts, q) for q in (50, 95, 99)},
        "timed": sum(counts),  # the requests the latency figures are taken over
        "compared": stats.compared,
        "disagreement": stats.disagreed / stats.compared if stats.compared else None,
    }
