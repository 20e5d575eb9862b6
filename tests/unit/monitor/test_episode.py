"""Episodes: folding of persisting drift/degradation, evidence-driven retry, AdaptationStalled."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from driftloop.monitor.domain.episode import (
    Episode,
    Episodes,
    Failure,
    cycle_failed,
    episode_status,
    labels_for_retry,
    observe,
    record_failure,
    stall_due,
    stalled_event,
)
from driftloop.monitor.domain.policy import TriggerState, decide_on_performance, gate
from driftloop.shared.events import Attempt
from driftloop.shared.spec import MonitorSpec, PerformancePolicy

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ONSET = NOW - timedelta(hours=1)
POLICY = MonitorSpec(cooldown=timedelta(hours=1), retry_labels=1000, stall_after=3)


def attempt(cycle: str, outcome: str = "TrainingFailed", reason: str = "too few labels") -> Attempt:
    return Attempt(cycle_id=cycle, trigger="drift", outcome=outcome, reason=reason, at=NOW)


def windows(holds: list[bool], every: int) -> list[tuple[int | None, bool]]:
    """(episode windows after each judged window, whether it reported)."""
    episode, out = None, []
    for i, h in enumerate(holds):
        seen = observe(episode, "drift", holds=h, start=ONSET + timedelta(minutes=i), every=every)
        episode = seen.episode
        out.append((episode.windows if episode else None, seen.report))
    return out


def test_a_persisting_condition_reports_on_its_first_window_then_every_n() -> None:
    seen = windows([True] * 7, every=3)

    assert seen == [(1, True), (2, False), (3, False), (4, True), (5, False), (6, False), (7, True)]


def test_a_clear_window_ends_the_episode_and_the_next_drift_starts_a_new_one() -> None:
    episode = observe(None, "drift", holds=True, start=ONSET, every=10).episode
    episode = observe(episode, "drift", holds=True, start=NOW, every=10).episode

    cleared = observe(episode, "drift", holds=False, start=NOW, every=10)
    again = observe(cleared.episode, "drift", holds=True, start=NOW, every=10)

    assert episode is not None
    assert episode.start == ONSET  # the onset is the first window's start, not the latest
    assert cleared == type(cleared)(None, False)
    assert again.report
    assert again.episode is not None
    assert again.episode.start == NOW


@pytest.mark.parametrize(
    ("failed", "needed"), [(1, 1000), (2, 2000), (3, 4000), (4, 8000)], ids=["1", "2", "3", "4"]
)
def test_the_labels_a_retry_waits_for_double_with_each_failed_attempt(
    failed: int, needed: int
) -> None:
    assert labels_for_retry(failed, 1000) == needed


def test_a_failed_cycle_is_recorded_once_however_often_its_end_is_delivered() -> None:
    episode = Episode("drift", ONSET, cycle_id="c1")

    once = record_failure(episode, attempt("c1"))
    twice = record_failure(once, attempt("c1"))

    assert once.failed == 1
    assert twice == once


def test_stall_is_due_once_at_stall_after_failed_attempts() -> None:
    episode = Episode("drift", ONSET)
    for cycle in ("c1", "c2"):
        episode = record_failure(episode, attempt(cycle))
    before = stall_due(episode, 3)
    episode = record_failure(episode, attempt("c3"))

    due = stall_due(episode, 3)
    after_report = stall_due(Episode("drift", ONSET, attempts=episode.attempts, stalled=True), 3)

    assert not before
    assert due
    assert not after_report


def test_a_failed_cycle_is_an_attempt_of_the_episode_that_started_it_and_stalls_it_once() -> None:
    episodes = Episodes().put("drift", Episode("drift", ONSET, cycle_id="c1"))

    def fail(episodes: Episodes, cycle: str) -> Failure | None:
        return cycle_failed(
            episodes, cycle, outcome="EvaluationFailed", reason="worse", at=NOW, stall_after=2
        )

    first = fail(episodes, "c1")
    assert first is not None
    restarted = first.episodes.put("drift", replace(first.episodes.open["drift"], cycle_id="c2"))
    second = fail(restarted, "c2")
    assert second is not None
    again = fail(second.episodes, "c2")
    manual = fail(episodes, "someone-elses")

    assert first.stalled is None
    assert second.stalled is not None
    assert [a.cycle_id for a in second.stalled.attempts] == ["c1", "c2"]
    assert second.stalled.attempts[0].trigger == "drift"
    assert again is not None
    assert again.stalled is None  # once per episode
    assert manual is None


def test_adaptation_stalled_names_every_attempt_and_the_live_metric() -> None:
    episode = Episode(
        "performance",
        ONSET,
        windows=4,
        attempts=(attempt("c1"), attempt("c2", "EvaluationFailed", "accuracy worse by 0.01")),
    )

    event = stalled_event("churn", episode, metric="accuracy", figure=0.71, threshold=0.8)

    assert event.onset == ONSET
    assert event.trigger == "performance"
    assert [a.cycle_id for a in event.attempts] == ["c1", "c2"]
    assert (event.metric, event.figure, event.threshold) == ("accuracy", 0.71, 0.8)
    assert "too few labels" in event.reason
    assert "EvaluationFailed: accuracy worse by 0.01" in event.reason


def test_episodes_survive_their_stored_form() -> None:
    episodes = Episodes().put(
        "drift",
        Episode("drift", ONSET, windows=3, event_id="e1", cycle_id="c2", attempts=(attempt("c1"),)),
    )
    episodes = episodes.put("performance", Episode("performance", NOW))

    loaded = Episodes.load(episodes.dump())

    assert loaded == episodes
    assert loaded.of_cycle("c2") == episodes.get("drift")
    assert Episodes.load(None) == Episodes()
    assert loaded.put("drift", None).dump().keys() == {"performance"}


def test_the_status_shows_the_labels_the_next_attempt_waits_for() -> None:
    episode = Episode("drift", ONSET, attempts=(attempt("c1"), attempt("c2")))

    shown = episode_status(episode, retry_labels=500, labels_since=120)
    fresh = episode_status(Episode("drift", ONSET), retry_labels=500, labels_since=120)

    assert shown["onset"] == ONSET.isoformat()
    assert (shown["next_attempt"], shown["retry_labels_needed"]) == (3, 1000)
    assert shown["labels_since_last_attempt"] == 120
    assert (fresh["next_attempt"], fresh["retry_labels_needed"]) == (1, None)


# The gate: evidence after a failed attempt, the clock otherwise -----------------------------

IN_COOLDOWN = NOW - timedelta(minutes=5)  # the failed attempt started 5 minutes ago


@pytest.mark.parametrize(
    ("state", "fire", "says"),
    [
        (TriggerState(IN_COOLDOWN), False, "cooldown"),
        (TriggerState(IN_COOLDOWN, failed_attempts=1, labels_since_attempt=999), False, "1000"),
        (TriggerState(IN_COOLDOWN, failed_attempts=1, labels_since_attempt=1000), True, "retry"),
        (TriggerState(IN_COOLDOWN, failed_attempts=2, labels_since_attempt=1500), False, "2000"),
        (TriggerState(IN_COOLDOWN, failed_attempts=2, labels_since_attempt=2000), True, "retry"),
        (
            TriggerState(IN_COOLDOWN, "c9", failed_attempts=1, labels_since_attempt=5000),
            False,
            "c9 is still running",
        ),
        (TriggerState(NOW - timedelta(hours=2)), True, "drift"),
    ],
    ids=[
        "no-failure-keeps-the-cooldown",
        "too-few-labels-since-the-failure",
        "enough-labels-retry-in-cooldown",
        "second-retry-needs-double",
        "second-retry-with-double",
        "a-running-cycle-still-blocks",
        "after-the-cooldown",
    ],
)
def test_a_retry_after_a_failed_attempt_waits_for_labels_not_the_cooldown(
    state: TriggerState, fire: bool, says: str
) -> None:
    decision = gate("PSI past 0.25 on f0", "drift: PSI past 0.25", state, POLICY, now=NOW)

    assert decision.fire is fire
    assert says in decision.reason


def test_the_performance_trigger_retries_by_evidence_too() -> None:
    policy = POLICY.model_copy(
        update={"performance": PerformancePolicy(metric="accuracy", min=0.8)}
    )
    state = TriggerState(IN_COOLDOWN, failed_attempts=3, labels_since_attempt=4000)

    decision = decide_on_performance(0.7, 500, state, policy, now=NOW)

    assert decision.fire
    assert "retry after 3 failed attempt(s)" in decision.reason
