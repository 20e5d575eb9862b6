"""When to retrain: the trigger policy with cooldown, hysteresis and evidence-driven retry.
Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from driftloop.monitor.domain.drift import DriftReport
from driftloop.monitor.domain.episode import labels_for_retry
from driftloop.shared.modeling import HIGHER_IS_BETTER
from driftloop.shared.spec import MonitorSpec, PerformancePolicy


@dataclass(frozen=True)
class TriggerState:
    last_retrain_at: datetime | None = None
    open_cycle_id: str | None = None  # a cycle still running: never start a second one
    # drift and performance triggers: failed attempts of the condition's open episode, and
    # the labels received since the last of them started (a retry waits for those, not the
    # cooldown)
    failed_attempts: int = 0
    labels_since_attempt: int = 0


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
    return gate(what, f"drift: {what} over {report.rows} rows", state, policy, now=now)


def gate(
    what: str, reason: str, state: TriggerState, policy: MonitorSpec, *, now: datetime
) -> RetrainDecision:
    """A trigger condition holds (`what`): fire unless a cycle runs or the cooldown holds it.

    This is the hysteresis every trigger shares: a persisting condition starts one cycle; it
    may start another only after that cycle ended and the cooldown since it passed. After
    failed attempts at the same episode (`state.failed_attempts`) the cooldown is not waited
    for: the next attempt comes once `retry_labels` * 2**(failed-1) labels arrived since the
    last attempt started (new evidence, not time, is what a retry needs).
    """
    if state.open_cycle_id is not None:
        return RetrainDecision(False, f"{what}, but cycle {state.open_cycle_id} is still running")
    if state.failed_attempts > 0:
        needed = labels_for_retry(state.failed_attempts, policy.retry_labels)
        got = state.labels_since_attempt
        after = f"{state.failed_attempts} failed attempt(s)"
        if got < needed:
            return RetrainDecision(
                False, f"{what}, but after {after} waiting for {needed} new labels ({got} so far)"
            )
        return RetrainDecision(
            True, f"{reason}; retry after {after}: {got} new labels (retry at {needed})"
        )
    if state.last_retrain_at is not None:
        ready_at = state.last_retrain_at + policy.cooldown
        if now < ready_at:
            return RetrainDecision(False, f"{what}, but in cooldown until {ready_at.isoformat()}")
    return RetrainDecision(True, reason)


def decide_on_performance(
    figure: float, labels: int, state: TriggerState, policy: MonitorSpec, *, now: datetime
) -> RetrainDecision:
    """Retrain when the live metric on labelled traffic is worse than the spec's floor (for
    rmse and mae, lower is better and `min` is the worst acceptable value)."""
    perf = policy.performance
    if not worse_than_floor(figure, perf):
        return RetrainDecision(
            False, f"{perf.metric} {figure:.4f} over {labels} labels is within the floor {perf.min}"
        )
    what = f"{perf.metric} {figure:.4f} over {labels} labels, floor {perf.min}"
    return gate(what, f"performance: {what}", state, policy, now=now)


def worse_than_floor(figure: float, perf: PerformancePolicy) -> bool:
    """Is the live metric worse than the floor? (lower is better for rmse and mae; no floor
    set: never)"""
    if perf.min is None:
        return False
    if HIGHER_IS_BETTER.get(perf.metric, True):
        return figure < perf.min
    return figure > perf.min


def decide_on_volume(
    new_labels: int, state: TriggerState, policy: MonitorSpec, *, now: datetime
) -> RetrainDecision | None:
    """Retrain once `min_new_labels` labelled rows arrived since the last retraining; None
    while the condition does not hold (or the trigger is off)."""
    if policy.min_new_labels is None or new_labels < policy.min_new_labels:
        return None
    what = f"{new_labels} new labelled rows (min_new_labels {policy.min_new_labels})"
    return gate(what, f"volume: {what}", state, policy, now=now)


def decide_on_schedule(
    state: TriggerState, policy: MonitorSpec, *, since: datetime, now: datetime
) -> RetrainDecision | None:
    """Retrain when `schedule` has passed since the last retraining (or since `since`, when
    the model was first seen); None while it has not (or the trigger is off)."""
    if policy.schedule is None:
        return None
    start = state.last_retrain_at or since
    if now < start + policy.schedule:
        return None
    what = f"{policy.schedule} since {start.isoformat()}"
    return gate(what, f"schedule: {what}", state, policy, now=now)
