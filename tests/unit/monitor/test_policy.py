"""The retrain trigger: enough features past psi_retrain, no running cycle, cooldown passed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from driftloop.monitor.domain.drift import DriftReport
from driftloop.monitor.domain.policy import TriggerState, decide_retrain
from driftloop.shared.events import FeatureDrift
from driftloop.shared.spec import DriftPolicy, MonitorSpec

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
POLICY = MonitorSpec(
    drift=DriftPolicy(psi_warn=0.2, psi_retrain=0.25, min_features=2),
    cooldown=timedelta(minutes=10),
)


def report(*psis: float) -> DriftReport:
    return DriftReport(
        rows=300,
        start=NOW - timedelta(minutes=5),
        end=NOW,
        features=[
            FeatureDrift(
                feature=f"f{i}",
                kind="numeric",
                psi=value,
                warn=0.2,
                retrain=0.25,
                drifted=value >= 0.2,
            )
            for i, value in enumerate(psis)
        ],
    )


@pytest.mark.parametrize(
    ("psis", "state", "fire", "says"),
    [
        ((0.4, 0.3, 0.0), TriggerState(), True, "f0, f1"),
        ((0.25, 0.25), TriggerState(), True, "f0, f1"),
        ((0.4, 0.24, 0.22), TriggerState(), False, "1 feature(s) past psi_retrain"),
        ((0.1, 0.1), TriggerState(), False, "0 feature(s)"),
        ((0.4, 0.3), TriggerState(last_retrain_at=NOW - timedelta(minutes=5)), False, "cooldown"),
        ((0.4, 0.3), TriggerState(last_retrain_at=NOW - timedelta(minutes=10)), True, "drift"),
        ((0.4, 0.3), TriggerState(last_retrain_at=NOW - timedelta(hours=2)), True, "drift"),
        ((0.4, 0.3), TriggerState(open_cycle_id="c-1"), False, "cycle c-1 is still running"),
        (
            (0.4, 0.3),
            TriggerState(last_retrain_at=NOW - timedelta(hours=2), open_cycle_id="c-1"),
            False,
            "c-1",
        ),
    ],
    ids=[
        "enough-features-cross",
        "exactly-at-psi-retrain-counts",
        "fewer-than-min-features",
        "no-drift",
        "in-cooldown",
        "cooldown-just-ended",
        "long-after-cooldown",
        "cycle-open",
        "cycle-open-after-cooldown",
    ],
)
def test_decide_retrain(
    psis: tuple[float, ...], state: TriggerState, fire: bool, says: str
) -> None:
    decision = decide_retrain(report(*psis), state, POLICY, now=NOW)

    assert decision.fire is fire
    assert says in decision.reason


def test_cooldown_suppresses_a_second_trigger_until_it_passes() -> None:
    drifted = report(0.5, 0.5)
    first = decide_retrain(drifted, TriggerState(), POLICY, now=NOW)
    after_first = TriggerState(last_retrain_at=NOW)

    during = decide_retrain(drifted, after_first, POLICY, now=NOW + timedelta(minutes=9))
    after = decide_retrain(drifted, after_first, POLICY, now=NOW + timedelta(minutes=10, seconds=1))

    assert first.fire
    assert not during.fire
    assert (NOW + timedelta(minutes=10)).isoformat() in during.reason
    assert after.fire


def test_cooldown_comes_from_the_monitor_spec() -> None:
    state = TriggerState(last_retrain_at=NOW - timedelta(minutes=30))
    long_cooldown = POLICY.model_copy(update={"cooldown": timedelta(hours=1)})

    short = decide_retrain(report(0.5, 0.5), state, POLICY, now=NOW)
    long = decide_retrain(report(0.5, 0.5), state, long_cooldown, now=NOW)

    assert short.fire
    assert not long.fire


def test_min_features_comes_from_the_monitor_spec() -> None:
    one_feature = POLICY.model_copy(
        update={"drift": DriftPolicy(psi_warn=0.2, psi_retrain=0.25, min_features=1)}
    )

    decision = decide_retrain(report(0.5, 0.0), TriggerState(), one_feature, now=NOW)

    assert decision.fire
    assert "f0" in decision.reason


def test_closing_the_cycle_lets_the_trigger_fire_again() -> None:
    running = TriggerState(last_retrain_at=NOW - timedelta(hours=1), open_cycle_id="c-1")

    blocked = decide_retrain(report(0.5, 0.5), running, POLICY, now=NOW)
    freed = decide_retrain(report(0.5, 0.5), replace(running, open_cycle_id=None), POLICY, now=NOW)

    assert not blocked.fire
    assert freed.fire
