"""A warning repeated under overload is logged once per period, counting what it stands for."""

from __future__ import annotations

from driftloop.shared.telemetry import LogThrottle


def test_the_first_occurrence_is_logged_at_once() -> None:
    throttle = LogThrottle(every=10.0)

    assert throttle.due(100.0) == 1


def test_occurrences_within_the_period_are_held_back_then_counted_in_the_next_line() -> None:
    throttle = LogThrottle(every=10.0)
    throttle.due(100.0)

    held = [throttle.due(100.0 + t) for t in (1.0, 2.0, 9.9)]
    line = throttle.due(110.0)

    assert held == [None, None, None]
    assert line == 4  # the three held back and this one


def test_a_quiet_spell_logs_the_next_occurrence_alone() -> None:
    throttle = LogThrottle(every=10.0)
    throttle.due(0.0)

    assert throttle.due(500.0) == 1
    assert throttle.due(505.0) is None
