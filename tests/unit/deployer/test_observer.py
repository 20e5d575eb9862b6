"""The monitor's answer read into what the rollout analysis needs."""

from __future__ import annotations

from driftloop.deployer.adapters.observer import timed


def test_latency_is_judged_over_the_requests_that_were_timed() -> None:
    # a shadow answers the jobs queued behind a timed one together: those carry no latency
    assert timed({"requests": 500, "timed": 12}) == 12


def test_a_monitor_without_timed_counts_every_request_as_timed() -> None:
    assert timed({"requests": 40}) == 40
    assert timed(None) == 0
