"""Per-version live statistics: bounded counters, percentiles, disagreement."""

from __future__ import annotations

import numpy as np
import pytest

from driftloop.monitor.domain.live import (
    LATENCY_EDGES_MS,
    VersionStats,
    add_comparison,
    add_request,
    disagreement,
    latency_percentile,
    summary,
)


def test_latency_percentiles_are_within_one_bucket_of_numpy() -> None:
    rng = np.random.default_rng(0)
    latencies = rng.lognormal(mean=2.0, sigma=0.8, size=5000)
    stats = VersionStats()

    for ms in latencies:
        stats = add_request(stats, rows=1, latency_ms=float(ms), failed=False)

    for q in (50, 95, 99):
        exact = float(np.percentile(latencies, q))
        estimate = latency_percentile(stats.latency, q)
        assert estimate is not None
        assert exact <= estimate <= exact * 1.2 + 1e-9


def test_counters_stay_bounded_however_much_traffic() -> None:
    few = add_request(VersionStats(), rows=10, latency_ms=3.0, failed=False)
    many = few
    for _ in range(2000):
        many = add_request(many, rows=10, latency_ms=30.0, failed=False)

    assert len(many.latency) == len(few.latency) == len(LATENCY_EDGES_MS) + 1


def test_error_rate_counts_rows_of_failed_requests() -> None:
    stats = add_request(VersionStats(), rows=30, latency_ms=5.0, failed=False)
    stats = add_request(stats, rows=10, latency_ms=5.0, failed=True)

    figures = summary(stats)

    assert figures["rows"] == 40
    assert figures["error_rate"] == pytest.approx(0.25)


def test_requests_answered_without_a_timing_count_but_leave_the_latency_figures_alone() -> None:
    stats = VersionStats()
    for _ in range(30):
        stats = add_request(stats, rows=1, latency_ms=2.0, failed=False)
    for _ in range(70):  # a shadow's jobs answered together: no request's latency
        stats = add_request(stats, rows=4, latency_ms=None, failed=False)

    figures = summary(stats)

    assert (figures["requests"], figures["rows"], figures["timed"]) == (100, 310, 30)
    assert figures["latency_ms"]["p95"] == latency_percentile(stats.latency, 95)
    assert figures["latency_ms"]["p95"] is not None
    assert figures["latency_ms"]["p95"] < 3.0


def test_disagreement_compares_answers_as_text() -> None:
    assert disagreement([1, 0, "yes", 1], ["1", 1, "yes", 1]) == 1


def test_disagreement_rate_is_unknown_until_something_was_compared() -> None:
    empty = summary(VersionStats())
    stats = add_comparison(VersionStats(), compared=8, disagreed=2)

    assert empty["disagreement"] is None
    assert empty["latency_ms"]["p95"] is None
    assert summary(stats)["disagreement"] == pytest.approx(0.25)
