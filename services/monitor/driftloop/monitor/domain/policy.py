"""When to retrain: the trigger policy with cooldown and hysteresis. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from driftloop.monitor.domain.drift import DriftReport
from driftloop.shared.spec import MonitorSpec


@dataclass(frozen=True)
class TriggerState:
    last_retrain_at: datetime | None = None
    open_cycle_id: str | None = None  # a cycle still running: never start a second one


@dataclass(frozen=True)
class RetrainDecision:
    fire: bool
    reason: str


def decide_retrain(
    report: DriftReport, state: TriggerState, policy: MonitorSpec, *, now: datetime
) -> RetrainDecision:
    """Retrain when enough features cross the retrain threshold, no cycle is running and the
    cooldown since the last retraining has passed."""
    crossed = report.past_retrain()
    needed = policy.drift.min_features
    if len(crossed) < needed:
        return RetrainDecision(
            False,
            f"{len(crossed)} feature(s) past psi_retrain "
            f"{policy.drift.psi_retrain}; {needed} needed",
        )
    what = f"PSI past {policy.drift.psi_retrain} on {', '.join(crossed)}"
    if state.open_cycle_id is not None:
        return RetrainDecision(False, f"{what}, but cycle {state.open_cycle_id} is still running")
    if state.last_retrain_at is not None:
        ready_at = state.last_retrain_at + policy.cooldown
        if now < ready_at:
            return RetrainDecision(False, f"{what}, but in cooldown until {ready_at.isoformat()}")
    return RetrainDecision(True, f"drift: {what} over {report.rows} rows")
