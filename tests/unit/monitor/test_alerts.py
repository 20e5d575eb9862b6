"""Which events alert, what the messages say, and when a failed send is tried again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftloop.monitor.domain.alerts import (
    LONGEST_RETRY,
    destinations_for,
    given_up,
    message,
    retry_at,
)
from driftloop.shared.events import (
    ApprovalRequired,
    CheckResult,
    Deployed,
    DriftDetected,
    EvaluationFailed,
    Event,
    FeatureDrift,
    PerformanceDegraded,
    RolledBack,
)
from driftloop.shared.spec import AlertDestination

T = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CONSOLE = "http://gw:8000/ui/models/churn"


def drift(windows: int) -> DriftDetected:
    return DriftDetected(
        model="churn",
        window_start=T,
        window_end=T + timedelta(minutes=5),
        rows=2000,
        reference_version="3",
        features=[
            FeatureDrift(
                feature="tenure", kind="numeric", psi=0.41, warn=0.2, retrain=0.25, drifted=True
            ),
            FeatureDrift(
                feature="plan", kind="categorical", psi=0.02, warn=0.2, retrain=0.25, drifted=False
            ),
        ],
        drifted_features=["tenure"],
        episode_start=T,
        episode_windows=windows,
    )


def degraded(windows: int) -> PerformanceDegraded:
    return PerformanceDegraded(
        model="churn",
        window_start=T,
        window_end=T,
        metric="accuracy",
        figure=0.71,
        threshold=0.85,
        labels=300,
        episode_start=T,
        episode_windows=windows,
    )


DEFAULT = [AlertDestination(url_env="DRIFTLOOP_ALERT_SLACK")]


@pytest.mark.parametrize(
    ("event", "alerts"),
    [
        (drift(1), True),
        (drift(2), False),
        (drift(11), False),
        (degraded(1), True),
        (degraded(11), False),
    ],
    ids=["drift-first", "drift-second", "drift-reminder", "perf-first", "perf-reminder"],
)
def test_only_the_first_window_of_an_episode_alerts(event: Event, alerts: bool) -> None:
    assert (destinations_for(event, DEFAULT) == ["DRIFTLOOP_ALERT_SLACK"]) is alerts


def test_deployed_alerts_only_a_destination_that_asks_for_it() -> None:
    asked = AlertDestination(url_env="DRIFTLOOP_ALERT_OPS", events=["Deployed"])
    event = Deployed(model="churn", cycle_id="c", version="4", previous_version="3", run_id="r")

    assert destinations_for(event, [*DEFAULT, asked]) == ["DRIFTLOOP_ALERT_OPS"]


def test_a_drift_alert_names_the_drifted_features_with_their_psi_and_links_the_console() -> None:
    sent = message(drift(1), console=CONSOLE)

    assert sent.title == "[driftloop] churn: input drift in 1 of 2 features"
    assert "tenure: PSI 0.410 (warn 0.2, retrain 0.25)" in sent.body
    assert "plan" not in sent.body
    assert "Next: " in sent.body
    assert sent.body.endswith(f"Console: {CONSOLE}")


def test_a_performance_alert_gives_the_metric_its_floor_and_the_drop() -> None:
    sent = message(degraded(1), console=CONSOLE)

    assert "accuracy 0.71 on 300 labels (below the floor by 0.14)" in sent.body


def test_an_approval_alert_gives_the_exact_command() -> None:
    sent = message(ApprovalRequired(model="churn", cycle_id="c", version="7"), console=CONSOLE)

    assert "`driftloop approve churn 7`" in sent.body


def test_failed_checks_are_listed_with_figures_and_passed_ones_left_out() -> None:
    checks = [
        CheckResult(name="min_delta", figure=-0.03, threshold=0.0, passed=False),
        CheckResult(name="latency_p95_ms", figure=12.0, threshold=50.0, passed=True),
    ]
    failed = EvaluationFailed(
        model="churn",
        cycle_id="c",
        version="5",
        run_id="r",
        champion_version="4",
        metric="f1",
        challenger_score=0.80,
        champion_score=0.83,
        checks=checks,
        reason="f1 worse than the champion",
    )
    rolled = RolledBack(
        model="churn",
        cycle_id="c",
        version="5",
        restored_version="4",
        checks=checks,
        check=checks[0],
        reason="canary error rate",
    )

    for event in (failed, rolled):
        body = message(event, console=CONSOLE).body
        assert "min_delta -0.03 (threshold 0)" in body
        assert "latency_p95_ms" not in body


def test_retries_double_from_a_second_up_to_ten_minutes() -> None:
    waits = [retry_at(n, now=T) - T for n in (1, 2, 3, 4, 30)]

    assert waits[:4] == [timedelta(seconds=s) for s in (1, 2, 4, 8)]
    assert waits[4] == LONGEST_RETRY


def test_an_alert_unsent_for_a_day_is_given_up() -> None:
    assert not given_up(T, now=T + timedelta(hours=23))
    assert given_up(T, now=T + timedelta(hours=25))
