"""The decisions counter's `reason` label: every reason the trigger policy gives, as one of a
few kinds (the reason text carries figures and times, unbounded as a label)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftloop.monitor.domain.decisions import REASON_KINDS, reason_kind
from driftloop.monitor.domain.drift import DriftReport
from driftloop.monitor.domain.policy import (
    RetrainDecision,
    TriggerState,
    decide_on_performance,
    decide_retrain,
)
from driftloop.shared.events import FeatureDrift
from driftloop.shared.spec import DriftPolicy, MonitorSpec, PerformancePolicy

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
POLICY = MonitorSpec(
    drift=DriftPolicy(psi_warn=0.2, psi_retrain=0.25, min_features=1),
    performance=PerformancePolicy(metric="accuracy", min=0.8),
    cooldown=timedelta(minutes=10),
)


def drifted(psi: float) -> DriftReport:
    feature = FeatureDrift(
        feature="tenure", kind="numeric", psi=psi, warn=0.2, retrain=0.25, drifted=psi >= 0.2
    )
    return DriftReport(rows=300, start=NOW, end=NOW, features=[feature])


CASES = [
    (decide_retrain(drifted(0.9), TriggerState(), POLICY, now=NOW), "condition"),
    (
        decide_retrain(
            drifted(0.9),
            TriggerState(failed_attempts=1, labels_since_attempt=5000),
            POLICY,
            now=NOW,
        ),
        "retry",
    ),
    (
        decide_retrain(drifted(0.9), TriggerState(open_cycle_id="c1"), POLICY, now=NOW),
        "cycle_running",
    ),
    (
        decide_retrain(
            drifted(0.9), TriggerState(last_retrain_at=NOW - timedelta(minutes=1)), POLICY, now=NOW
        ),
        "cooldown",
    ),
    (
        decide_retrain(
            drifted(0.9), TriggerState(failed_attempts=1, labels_since_attempt=3), POLICY, now=NOW
        ),
        "waiting_for_labels",
    ),
    (decide_retrain(drifted(0.1), TriggerState(), POLICY, now=NOW), "below_threshold"),
    (decide_on_performance(0.9, 300, TriggerState(), POLICY, now=NOW), "within_floor"),
    (decide_on_performance(0.5, 300, TriggerState(), POLICY, now=NOW), "condition"),
    (RetrainDecision(False, "a reason from a newer policy"), "other"),
]


@pytest.mark.parametrize(
    ("decision", "kind"), CASES, ids=[f"{kind}-{i}" for i, (_, kind) in enumerate(CASES)]
)
def test_each_policy_reason_has_its_kind(decision: RetrainDecision, kind: str) -> None:
    assert reason_kind(fired=decision.fire, reason=decision.reason) == kind


def test_every_kind_is_a_known_label_value() -> None:
    assert {kind for _, kind in CASES} == set(REASON_KINDS)
