"""The rollout state machine: pure functions from (rollout, observation or command, spec) to
a transition (the new state, the events to emit, the audit entries to write).

    shadow ──▶ awaiting_approval? ──▶ canary step 1 … n ──▶ promoted
       └──────────────┴────────────────────┴──────────────▶ rolled_back

A stage is analysed from the monitor's live figures of the challenger against the
champion's: it passes once the challenger answered the stage's rows (`shadow.rows`, or
`canary.rows_per_step` at each weight) within every bound, and fails, rolling back at once,
as soon as a bound is broken beyond recovery; one that does neither ends at the progress
deadline (`progress.py`, whose `look` wraps `analyse`). The routes the gateways must follow
are a pure function of the rollout (`routes_for`), so the adapter can always re-apply them
after a crash.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from statistics import NormalDist
from typing import Any, Literal

from driftloop.shared.events import (
    ApprovalRequired,
    Approved,
    CheckResult,
    Deployed,
    EvaluationPassed,
    Event,
    RolledBack,
    RolloutAdvanced,
)
from driftloop.shared.modeling import HIGHER_IS_BETTER
from driftloop.shared.routes import CanaryRoute, Routes, Served
from driftloop.shared.spec import CanarySpec, ModelSpec


class Stage(StrEnum):
    SHADOW = "shadow"
    AWAITING_APPROVAL = "awaiting_approval"
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


RUNNING = frozenset({Stage.SHADOW, Stage.AWAITING_APPROVAL, Stage.CANARY})
TERMINAL = frozenset({Stage.PROMOTED, Stage.ROLLED_BACK})


class RolloutError(ValueError):
    """A command that does not apply to the rollout as it is (the message says why)."""


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one version on one route, as the monitor reports them."""

    rows: int = 0
    errors: int = 0
    compared: int = 0
    disagreed: int = 0

    def since(self, base: Counters) -> Counters:
        return Counters(
            rows=self.rows - base.rows,
            errors=self.errors - base.errors,
            compared=self.compared - base.compared,
            disagreed=self.disagreed - base.disagreed,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "errors": self.errors,
            "compared": self.compared,
            "disagreed": self.disagreed,
        }


@dataclass(frozen=True)
class Observation:
    """What the monitor knows of the challenger's stage and of the champion."""

    challenger: Counters  # on the stage's route (shadow or canary), cumulative
    challenger_p95_ms: float | None = None
    champion_p95_ms: float | None = None
    challenger_requests: int = 0  # the requests each latency figure is taken over
    champion_requests: int = 0
    metric: str = "accuracy"
    challenger_metric: float | None = None  # on labelled rows predicted since the stage began
    challenger_labels: int = 0
    champion_metric: float | None = None  # on labelled rows predicted since `champion_since`
    champion_labels: int = 0
    routes: Mapping[str, Counters] = field(default_factory=dict)  # the challenger's, every route
    challenger_metric_se: float | None = None  # standard errors of the two metrics (the
    champion_metric_se: float | None = None  # monitor's; None from a monitor before them)

    def counters_on(self, route: str) -> Counters:
        return self.routes.get(route, Counters())


@dataclass(frozen=True)
class Rollout:
    model: str
    cycle_id: str
    version: str
    run_id: str
    previous: Served | None  # the champion this release replaces (restored on rollback)
    stage: Stage
    started_at: datetime
    stage_started_at: datetime
    updated_at: datetime  # the last move (a stage entered, paused, resumed): progress.py
    step: int = 0  # index into the canary's steps (`steps_of`) while in canary
    weight: int = 0
    paused: bool = False
    baseline: Counters | None = None  # the route's counters when the stage's count began
    rows_reached_at: datetime | None = None
    reason: str = ""
    revision: int = 0  # bumped on every transition (optimistic concurrency in the store)
    trace: dict[str, str] = field(default_factory=dict)  # the cycle's W3C trace context
    degraded: bool = False  # it replaces a champion shown degraded: the canary's degraded_steps

    @property
    def running(self) -> bool:
        return self.stage in RUNNING

    @property
    def route(self) -> Literal["shadow", "canary"] | None:
        if self.stage is Stage.SHADOW:
            return "shadow"
        if self.stage is Stage.CANARY:
            return "canary"
        return None

    @property
    def served(self) -> Served:
        return Served(version=self.version, run_id=self.run_id)

    def summary(self) -> dict[str, Any]:
        return {
            "state": self.stage.value,
            "cycle_id": self.cycle_id,
            "version": self.version,
            "previous_version": self.previous.version if self.previous else None,
            "step": self.step,
            "weight": self.weight,
            "paused": self.paused,
            "degraded": self.degraded,
            "stage_started_at": self.stage_started_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class AuditEntry:
    from_stage: str | None
    to_stage: str
    actor: str
    reason: str


@dataclass(frozen=True)
class Transition:
    rollout: Rollout
    events: list[Event] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)

    @property
    def moves_routes(self) -> bool:
        """Whether the gateways must see new routes (every audited move changes them)."""
        return bool(self.audit)


def routes_for(rollout: Rollout, current: Routes | None) -> Routes:
    """The routes a rollout in its present state asks of every gateway."""
    champion: Served | None
    canary = shadow = None
    if rollout.stage is Stage.PROMOTED:
        champion = rollout.served
    elif rollout.stage is Stage.ROLLED_BACK:
        champion = rollout.previous
    else:
        champion = rollout.previous
        if rollout.stage is Stage.SHADOW:
            shadow = rollout.served
        elif rollout.stage is Stage.CANARY:
            canary = CanaryRoute(
                version=rollout.version, run_id=rollout.run_id, weight=rollout.weight
            )
    return Routes(
        model=rollout.model,
        champion=champion,
        canary=canary,
        shadow=shadow,
        revision=(current.revision + 1) if current else 1,
        rollout=rollout.summary(),
        updated_at=rollout.updated_at,
    )


# Starting a release ----------------------------------------------------------------------


def start(
    passed: EvaluationPassed,
    previous: Served | None,
    spec: ModelSpec,
    *,
    now: datetime,
    trace: dict[str, str] | None = None,
) -> Transition:
    """The first transition of a release once its evaluation passed.

    With nothing serving yet (or the version already champion) it is promoted at once:
    there is nothing to compare it with live. Otherwise it enters the first stage the spec
    asks for: shadow, then approval, then the canary steps (each may be skipped; the
    `degraded_steps` when the evaluation showed the champion degraded, `steps_of`).
    """
    rollout = Rollout(
        model=passed.model,
        cycle_id=passed.cycle_id,
        version=passed.version,
        run_id=passed.run_id,
        previous=previous,
        stage=Stage.SHADOW,
        started_at=now,
        stage_started_at=now,
        updated_at=now,
        trace=dict(trace or {}),
        degraded=passed.champion_degraded,
    )
    if previous is None or previous.version == passed.version:
        return promote(rollout, now=now, actor="deployer", reason="first version of the model")
    if spec.deployer.shadow.rows > 0:
        return Transition(
            rollout,
            [_advanced(rollout, reason="mirroring live traffic")],
            [
                AuditEntry(
                    None, Stage.SHADOW.value, "deployer", passed.reason or "evaluation passed"
                )
            ],
        )
    return _after_shadow(rollout, spec, now=now, checks=[], reason="shadow skipped (rows: 0)")


def _after_shadow(
    rollout: Rollout, spec: ModelSpec, *, now: datetime, checks: list[CheckResult], reason: str
) -> Transition:
    if spec.deployer.approval == "manual":
        waiting = _enter(rollout, Stage.AWAITING_APPROVAL, now=now, reason=reason)
        return Transition(
            waiting,
            [
                _advanced(waiting, reason=reason, checks=checks),
                ApprovalRequired(
                    model=rollout.model, cycle_id=rollout.cycle_id, version=rollout.version
                ),
            ],
            [AuditEntry(_from(rollout), Stage.AWAITING_APPROVAL.value, "deployer", reason)],
        )
    return _canary_step(rollout, 0, spec, now=now, checks=checks, reason=reason, actor="deployer")


# Unset `degraded_steps`: the steps from this weight on.
DEGRADED_FROM_WEIGHT = 50


def steps_of(rollout: Rollout, spec: ModelSpec) -> list[int]:
    """The canary weights of a release: `steps`, or when it replaces a champion shown
    degraded `degraded_steps` (the old champion is a known loss; each step still needs
    `rows_per_step` rows within every bound, so the challenger answers as many rows before it
    is judged). Unset, those are `steps` from DEGRADED_FROM_WEIGHT on, or their last one when
    all are lower: never a step the spec did not ask for."""
    canary = spec.deployer.canary
    if not rollout.degraded:
        return canary.steps
    if canary.degraded_steps is not None:
        return canary.degraded_steps
    high = [w for w in canary.steps if w >= DEGRADED_FROM_WEIGHT]
    return high or canary.steps[-1:]


def _canary_step(
    rollout: Rollout,
    step: int,
    spec: ModelSpec,
    *,
    now: datetime,
    checks: list[CheckResult],
    reason: str,
    actor: str,
) -> Transition:
    steps = steps_of(rollout, spec)
    if step >= len(steps):
        return promote(rollout, now=now, actor=actor, reason=reason, checks=checks)
    moved = replace(
        _enter(rollout, Stage.CANARY, now=now, reason=reason), step=step, weight=steps[step]
    )
    return Transition(
        moved,
        [_advanced(moved, reason=reason, checks=checks, by=actor)],
        [AuditEntry(_from(rollout), f"canary {steps[step]}%", actor, reason)],
    )


def _enter(rollout: Rollout, stage: Stage, *, now: datetime, reason: str) -> Rollout:
    return replace(
        rollout,
        stage=stage,
        stage_started_at=now,
        updated_at=now,
        baseline=None,
        rows_reached_at=None,
        reason=reason,
        revision=rollout.revision + 1,
    )


def _from(rollout: Rollout) -> str:
    if rollout.stage is Stage.CANARY:
        return f"canary {rollout.weight}%"
    return rollout.stage.value


def _advanced(
    rollout: Rollout, *, reason: str, checks: list[CheckResult] | None = None, by: str = "deployer"
) -> RolloutAdvanced:
    stage: Literal["shadow", "awaiting_approval", "canary", "champion"] = (
        "champion" if rollout.stage is Stage.PROMOTED else rollout.stage.value  # type: ignore[assignment]
    )
    return RolloutAdvanced(
        model=rollout.model,
        cycle_id=rollout.cycle_id,
        version=rollout.version,
        stage=stage,
        weight=100 if rollout.stage is Stage.PROMOTED else rollout.weight,
        paused=rollout.paused,
        by=by,
        reason=reason,
        checks=checks or [],
    )


# Ending a release ------------------------------------------------------------------------


def promote(
    rollout: Rollout,
    *,
    now: datetime,
    actor: str,
    reason: str,
    checks: list[CheckResult] | None = None,
) -> Transition:
    done = replace(
        _enter(rollout, Stage.PROMOTED, now=now, reason=reason), weight=100, paused=False
    )
    previous = rollout.previous.version if rollout.previous else None
    return Transition(
        done,
        [
            _advanced(done, reason=reason, checks=checks, by=actor),
            Deployed(
                model=rollout.model,
                cycle_id=rollout.cycle_id,
                version=rollout.version,
                previous_version=previous if previous != rollout.version else None,
                run_id=rollout.run_id,
            ),
        ],
        [
            AuditEntry(
                _from(rollout) if rollout.running else None, Stage.PROMOTED.value, actor, reason
            )
        ],
    )


def roll_back(
    rollout: Rollout,
    *,
    now: datetime,
    actor: str,
    reason: str,
    failed: CheckResult | None = None,
    checks: list[CheckResult] | None = None,
) -> Transition:
    """End a running rollout: the champion it would have replaced serves everything again."""
    done = replace(
        _enter(rollout, Stage.ROLLED_BACK, now=now, reason=reason), weight=0, paused=False
    )
    return Transition(
        done,
        [
            RolledBack(
                model=rollout.model,
                cycle_id=rollout.cycle_id,
                version=rollout.version,
                restored_version=rollout.previous.version if rollout.previous else None,
                restored_run_id=rollout.previous.run_id if rollout.previous else None,
                check=failed,
                checks=checks or ([failed] if failed else []),
                by=actor,
                reason=reason,
            )
        ],
        [AuditEntry(_from(rollout), Stage.ROLLED_BACK.value, actor, reason)],
    )


def restore(
    champion: Served,
    target: Served,
    *,
    model: str,
    cycle_id: str,
    now: datetime,
    actor: str,
    reason: str,
) -> Transition:
    """A manual rollback with no rollout running: an earlier version becomes champion again.
    It is its own cycle (one RolledBack), so the monitor takes the restored reference."""
    rollout = _manual_cycle(model, cycle_id, champion, previous=target, now=now)
    transition = roll_back(rollout, now=now, actor=actor, reason=reason)
    entry = AuditEntry(f"champion {champion.version}", Stage.ROLLED_BACK.value, actor, reason)
    return replace(transition, audit=[entry])


def _manual_cycle(
    model: str, cycle_id: str, version: Served, *, previous: Served | None, now: datetime
) -> Rollout:
    """The rollout of a cycle a person starts with no rollout running: `version` over
    `previous`, moved at once (never analysed)."""
    return Rollout(
        model=model,
        cycle_id=cycle_id,
        version=version.version,
        run_id=version.run_id,
        previous=previous,
        stage=Stage.PROMOTED,
        started_at=now,
        stage_started_at=now,
        updated_at=now,
        weight=100,
    )


def release(
    champion: Served | None,
    target: Served,
    *,
    model: str,
    cycle_id: str,
    now: datetime,
    actor: str,
    reason: str,
) -> Transition:
    """A manual promotion with no rollout running: `target` becomes champion at once, as its
    own cycle (one Deployed), so the monitor takes its reference."""
    rollout = _manual_cycle(model, cycle_id, target, previous=champion, now=now)
    transition = promote(rollout, now=now, actor=actor, reason=reason)
    before = f"champion {champion.version}" if champion else None
    return replace(transition, audit=[AuditEntry(before, Stage.PROMOTED.value, actor, reason)])


# Commands of a person ----------------------------------------------------------------------


def approve(rollout: Rollout, spec: ModelSpec, *, now: datetime, actor: str) -> Transition:
    _must_await_approval(rollout)
    approved = Approved(
        model=rollout.model, cycle_id=rollout.cycle_id, version=rollout.version, by=actor
    )
    step = _canary_step(
        replace(rollout, paused=False),
        0,
        spec,
        now=now,
        checks=[],
        reason=f"approved by {actor}",
        actor=actor,
    )
    return replace(step, events=[approved, *step.events])


def reject(rollout: Rollout, *, now: datetime, actor: str, reason: str) -> Transition:
    _must_await_approval(rollout)
    return roll_back(rollout, now=now, actor=actor, reason=reason or f"rejected by {actor}")


def _must_await_approval(rollout: Rollout) -> None:
    if rollout.stage is not Stage.AWAITING_APPROVAL:
        raise RolloutError(
            f"version {rollout.version} of {rollout.model} is in {rollout.stage.value}, "
            "not awaiting approval"
        )


def pause(
    rollout: Rollout,
    *,
    now: datetime,
    actor: str,
    paused: bool,
    reason: str = "",
    checks: list[CheckResult] | None = None,
) -> Transition:
    """Freeze (or thaw) the analysis: the routes stay as they are, nothing advances or rolls
    back by itself; a person may still approve, promote or roll back. Either restarts the
    progress deadline's clock (`updated_at`). A `reason` (the deployer's own pause) is kept
    on the rollout for `status`."""
    if rollout.paused == paused:
        raise RolloutError(
            f"the rollout of {rollout.model} version {rollout.version} is already "
            + ("paused" if paused else "running")
        )
    verb = "paused" if paused else "resumed"
    moved = replace(
        rollout,
        paused=paused,
        updated_at=now,
        revision=rollout.revision + 1,
        reason=reason or rollout.reason,
    )
    reason = reason or f"{verb} by {actor}"
    return Transition(
        moved,
        [_advanced(moved, reason=reason, checks=checks, by=actor)],
        [AuditEntry(_from(rollout), f"{_from(moved)} ({verb})", actor, reason)],
    )


# Analysis ------------------------------------------------------------------------------


def analyse(
    rollout: Rollout, seen: Observation | None, spec: ModelSpec, *, now: datetime
) -> Transition | None:
    """One look at a running rollout: None to hold, else the transition to make.

    A transition with no events (only state: the stage's baseline, or the moment its rows
    were reached) is bookkeeping; an audited one moves the release.
    """
    if not rollout.running or rollout.paused:
        return None
    if rollout.stage is Stage.AWAITING_APPROVAL:
        limit = spec.deployer.approval_timeout
        waited = now - rollout.stage_started_at
        if waited <= limit:
            return None
        check = CheckResult(
            name="approval_wait",
            figure=waited.total_seconds(),
            threshold=limit.total_seconds(),
            passed=False,
            detail="no approval came in time",
        )
        return roll_back(
            rollout, now=now, actor="deployer", reason="approval timed out", failed=check
        )
    if seen is None:
        return None
    if rollout.baseline is None:
        return Transition(replace(rollout, baseline=seen.challenger, revision=rollout.revision + 1))
    canary = spec.deployer.canary
    needed = spec.deployer.shadow.rows if rollout.stage is Stage.SHADOW else canary.rows_per_step
    stage = seen.challenger.since(rollout.baseline)
    errors = _error_check(stage, needed, canary.max_error_rate)
    if stage.errors > canary.max_error_rate * needed:  # the stage can no longer pass
        return roll_back(
            rollout,
            now=now,
            actor="deployer",
            reason=f"{_from(rollout)}: error rate above {canary.max_error_rate:g}",
            failed=errors,
        )
    if stage.rows < needed:
        return None
    if rollout.rows_reached_at is None:
        rollout = replace(rollout, rows_reached_at=now, revision=rollout.revision + 1)
    metric = _metric_check(rollout, seen, spec, now=now)
    if metric is None:  # waiting for the labels of the stage's rows
        if rollout.rows_reached_at == now:
            return Transition(rollout)
        return None
    checks = [
        CheckResult(name="rows", figure=stage.rows, threshold=needed, passed=True),
        errors,
        _latency_check(seen, canary.max_latency_ratio),
        _disagreement_check(stage, canary.max_disagreement),
        metric,
    ]
    failed = next((c for c in checks if not c.passed), None)
    if failed is not None:
        return roll_back(
            rollout,
            now=now,
            actor="deployer",
            reason=f"{_from(rollout)}: {failed.name} out of bounds",
            failed=failed,
            checks=checks,
        )
    reason = f"{_from(rollout)} passed on {stage.rows} rows"
    if rollout.stage is Stage.SHADOW:
        moved = _after_shadow(rollout, spec, now=now, checks=checks, reason=reason)
    else:
        moved = _canary_step(
            rollout, rollout.step + 1, spec, now=now, checks=checks, reason=reason, actor="deployer"
        )
    # The next stage counts from this look, made before the routes change: a baseline taken
    # at the next look would leave out what the new weight served in between, and the stage
    # would expose more rows than its share (as many as a second's traffic, or more).
    route = moved.rollout.route
    if route is not None and moved.rollout.baseline is None:
        return replace(moved, rollout=replace(moved.rollout, baseline=seen.counters_on(route)))
    return moved


def _error_check(stage: Counters, needed: int, limit: float) -> CheckResult:
    rate = stage.errors / stage.rows if stage.rows else 0.0
    return CheckResult(
        name="error_rate",
        figure=round(rate, 6),
        threshold=limit,
        passed=stage.errors <= limit * needed and rate <= limit,
        detail=f"{stage.errors} of {stage.rows} rows failed",
    )


LATENCY_MIN_REQUESTS = 20  # a p95 over fewer requests is the slowest one or two: noise


def _latency_check(seen: Observation, max_ratio: float) -> CheckResult:
    few = min(seen.challenger_requests, seen.champion_requests) < LATENCY_MIN_REQUESTS
    if not seen.challenger_p95_ms or not seen.champion_p95_ms or few:
        return CheckResult(
            name="latency_p95_ratio",
            figure=None,
            threshold=max_ratio,
            passed=True,
            detail=(
                f"not compared: {seen.challenger_requests} and {seen.champion_requests} "
                f"requests (fewer than {LATENCY_MIN_REQUESTS} on a side)"
            ),
        )
    ratio = seen.challenger_p95_ms / seen.champion_p95_ms
    return CheckResult(
        name="latency_p95_ratio",
        figure=round(ratio, 4),
        threshold=max_ratio,
        passed=ratio <= max_ratio,
        detail=f"p95 {seen.challenger_p95_ms:.3g} ms vs champion {seen.champion_p95_ms:.3g} ms",
    )


def _disagreement_check(stage: Counters, limit: float | None) -> CheckResult:
    share = stage.disagreed / stage.compared if stage.compared else None
    if limit is None or share is None:
        return CheckResult(
            name="disagreement",
            figure=share,
            threshold=limit,
            passed=True,
            detail="not judged" if limit is None else "not compared: no paired answers",
        )
    return CheckResult(
        name="disagreement",
        figure=round(share, 6),
        threshold=limit,
        passed=share <= limit,
        detail=f"{stage.disagreed} of {stage.compared} answers differ from the champion",
    )


def _metric_check(
    rollout: Rollout, seen: Observation, spec: ModelSpec, *, now: datetime
) -> CheckResult | None:
    """The challenger's metric on the stage's labelled rows against the champion's since
    `champion_since` (the same stage while it answers a part of it); None while the labels
    may still come (up to `canary.label_wait` after the stage's rows were reached), and
    while the drop is within noise of `max_metric_drop` (`canary.metric_confidence`; the
    step holds its weight until it is sure either way or has `monitor.window` labelled
    rows). A shadow's answers are not joined with labels."""
    canary = spec.deployer.canary
    name = f"{seen.metric}_drop"
    if not labelled(seen, canary) or seen.challenger_metric is None or seen.champion_metric is None:
        reached = rollout.rows_reached_at or now
        if rollout.stage is Stage.CANARY and now - reached < canary.label_wait:
            return None
        return CheckResult(
            name=name,
            figure=None,
            threshold=canary.max_metric_drop,
            passed=True,
            detail=(
                f"not compared: {seen.challenger_labels} labelled rows of the stage and "
                f"{seen.champion_labels} of the champion (min_labels {canary.min_labels})"
            ),
        )
    higher = HIGHER_IS_BETTER.get(seen.metric, True)
    drop = (
        seen.champion_metric - seen.challenger_metric
        if higher
        else seen.challenger_metric - seen.champion_metric
    )
    detail = (
        f"{seen.metric} {seen.challenger_metric:.4f} on {seen.challenger_labels} labelled "
        f"rows vs champion {seen.champion_metric:.4f} on {seen.champion_labels}"
    )
    margin = _noise_margin(seen, canary.metric_confidence)
    passed = drop <= canary.max_metric_drop
    if margin is not None:
        low, high = drop - margin, drop + margin
        detail += (
            f"; drop {drop:.4f} within [{low:.4f}, {high:.4f}] "
            f"({canary.metric_confidence:.0%} one-sided each way)"
        )
        if low > canary.max_metric_drop:
            passed = False  # worse beyond the bound, and sure of it
        elif high <= canary.max_metric_drop:
            passed = True  # within the bound, and sure of it
        elif seen.challenger_labels < spec.monitor.window:
            return None  # not sure either way: more labels at this weight
        else:
            detail += f"; not sure either way at {spec.monitor.window} labels: point estimate"
    return CheckResult(
        name=name,
        figure=round(drop, 6),
        threshold=canary.max_metric_drop,
        passed=passed,
        detail=detail,
    )


def champion_since(rollout: Rollout) -> datetime:
    """Since when the champion's labelled rows are taken for the metric check: the stage's
    start while the champion answers a part of the stage's traffic (a canary under 100 %), so
    that both versions are judged on requests of the same time; else the rollout's start (at
    100 % it answers nothing in the stage).

    Over the whole rollout the champion's figure counted its rows of the shadow stage, and a
    drifting stream's metric moves from one stage to the next: in `make bench-adapt`'s `mc`
    run of 2026-12-07 the champion scored 0.62 on its 1,000 rows since the rollout began,
    where the bench's replay gives it 0.537 on the canary's own 600 rows and the canary scored
    0.553 on them: the canary, better on the same requests, was rolled back as 0.08 worse."""
    if rollout.stage is Stage.CANARY and rollout.weight < 100:
        return rollout.stage_started_at
    return rollout.started_at


def labelled(seen: Observation, canary: CanarySpec) -> bool:
    """Both metrics are taken over at least `canary.min_labels` labelled rows."""
    return min(seen.challenger_labels, seen.champion_labels) >= canary.min_labels


def _noise_margin(seen: Observation, confidence: float | None) -> float | None:
    """How far the drop may be from the true one at `confidence` (one-sided): z times the
    standard error of the difference of two independent figures; None when off or unknown."""
    if confidence is None or seen.challenger_metric_se is None or seen.champion_metric_se is None:
        return None
    se = math.hypot(seen.challenger_metric_se, seen.champion_metric_se)
    return NormalDist().inv_cdf(confidence) * se
