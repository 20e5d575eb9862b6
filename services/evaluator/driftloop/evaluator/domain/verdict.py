"""Judging a challenger against the champion on the challenger's holdout: pure, given both
models' outputs on the same rows (docs/evaluation.md).

The evidence that the champion is degraded picks the rule (`rule_for`; the evidence:
domain/degradation.py, a performance trigger, or a drift trigger whose champion scores
measurably worse on the post-drift holdout than when it was trained): with it non-inferiority,
point bound min(min_delta, 0) and lower bound -degraded_margin (never stricter than the strict
rule); otherwise the strict rule, point bound min_delta and lower bound min_delta -
non_inferiority. With a champion, the verdict
passes when every check passes:
- `<metric>_delta`: the improvement d (challenger - champion; champion - challenger for
  rmse and mae) on the holdout is at least the rule's point bound;
- `<metric>_delta_lower_bound` (bootstrap): the one-sided lower confidence bound of d at
  `confidence` (the 1 - confidence quantile of d over paired bootstrap resamples of the
  holdout) is at least the rule's lower bound; or, with `uncertainty: mcnemar`,
  `accuracy_mcnemar_p`: McNemar's exact one-sided p-value of H0 "d <= the rule's lower
  bound" is at most 1 - confidence;
- `slice[<column>=<value>].<metric>_delta`: in every slice with at least `min_slice_rows`
  rows, d is at least -`slice_tolerance` (smaller slices are reported, not judged);
- `<metric>_floor` when `min_score` is set; `latency_p95_ms` within `max_p95_ms`.
With no champion (the first version) only the floor and the latency are judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from driftloop.evaluator.domain.degradation import Degradation, assess
from driftloop.evaluator.domain.resampling import BoolArray, Outputs, weighted_metric
from driftloop.evaluator.domain.slices import Slice, slices_of
from driftloop.evaluator.domain.uncertainty import Interval, McNemar, mcnemar, paired_bootstrap
from driftloop.shared.events import CheckResult, Trigger
from driftloop.shared.modeling import HIGHER_IS_BETTER, confusion, holdout_metrics
from driftloop.shared.spec import EvaluatorSpec, ModelSpec

# Figures at a threshold pass: 0.85 - 0.8 is 0.04999999999999993 in floating point.
EPSILON = 1e-9


@dataclass(frozen=True)
class Rule:
    """What the improvement d must reach: `min_delta` (its point estimate) and `min_bound`
    (its one-sided lower confidence bound); `name` and `why` say which rule and why,
    `evidence` what the champion's degradation was judged on."""

    name: str
    trigger: Trigger
    min_delta: float
    min_bound: float
    why: str
    evidence: str = ""
    degraded: bool = False  # the champion was shown degraded (the lenient rule)

    @property
    def label(self) -> str:
        """e.g. `non-inferiority: the champion is degraded (trigger drift)`."""
        return f"{self.name}: {self.why} (trigger {self.trigger})"


def rule_for(ev: EvaluatorSpec, trigger: Trigger, degradation: Degradation) -> Rule:
    """Non-inferiority when the champion is shown degraded (a not-worse challenger trained on
    the new regime is the safer bet; shadow and canary judge it live next), the strict rule
    otherwise. The lenient rule is never stricter than the strict one."""
    strict_bound = ev.min_delta - ev.non_inferiority
    if degradation.degraded:
        return Rule(
            name="non-inferiority",
            trigger=trigger,
            min_delta=min(ev.min_delta, 0.0),
            min_bound=min(-ev.degraded_margin, strict_bound),
            why="the champion is degraded",
            evidence=degradation.why,
            degraded=True,
        )
    return Rule(
        name="strict",
        trigger=trigger,
        min_delta=ev.min_delta,
        min_bound=strict_bound,
        why="no evidence the champion is degraded",
        evidence=degradation.why,
    )


@dataclass(frozen=True)
class Evidence:
    """Both models' outputs on the challenger's holdout. `classes`: a classifier's labels, the
    challenger's in its order then any other (probability columns follow it); `columns`: the
    holdout's raw columns the spec's slices name; `latency_p95_ms`: the challenger's."""

    y_true: npt.NDArray[Any]
    challenger: Outputs
    champion: Outputs | None
    latency_p95_ms: float
    classes: list[Any] | None = None
    columns: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)
    # a first version refitted on its holdout too: the trainer's holdout metrics, taken before
    # the refit, are the honest figures for the floor (its outputs here have seen those rows)
    measured: Mapping[str, float] | None = None
    # the champion's metrics on its own holdout when it was trained (is it degraded since?)
    champion_trained: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Verdict:
    passed: bool
    challenger_score: float
    champion_score: float | None
    checks: list[CheckResult]
    reason: str
    report: dict[str, Any] = field(default_factory=dict)
    champion_degraded: bool = False  # judged by the lenient rule: the champion shown degraded


def p95_ms(latencies_seconds: list[float]) -> float:
    return float(np.percentile(np.asarray(latencies_seconds) * 1000.0, 95))


def judge(
    spec: ModelSpec, evidence: Evidence, *, trigger: Trigger, rng: np.random.Generator
) -> Verdict:
    """The verdict with every check, its figure and threshold, and the full report; the
    cycle's `trigger` and the champion's figures pick the rule against it (`rule_for`)."""
    ev = spec.evaluator
    metric = ev.metric
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    ours_all = _metrics(spec.task, evidence, evidence.challenger)
    if evidence.champion is None and evidence.measured:
        ours_all = {k: evidence.measured.get(k, v) for k, v in ours_all.items()}
    theirs_all = (
        _metrics(spec.task, evidence, evidence.champion) if evidence.champion is not None else None
    )
    ours = ours_all.get(metric)
    theirs = theirs_all.get(metric) if theirs_all else None
    report: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": sign > 0,
        "holdout_rows": len(evidence.y_true),
        "challenger": _model_report(spec.task, evidence, evidence.challenger, ours_all),
        "champion": (
            _model_report(spec.task, evidence, evidence.champion, theirs_all)
            if evidence.champion is not None and theirs_all is not None
            else None
        ),
        "latency_p95_ms": evidence.latency_p95_ms,
    }
    checks: list[CheckResult] = []
    if ours is None:
        checks.append(_unavailable(metric, "challenger"))
        return _conclude(checks, float("nan"), None, metric, report, None)
    slices, missing_columns = _slices(ev, evidence)
    compared_by: Rule | None = None  # the rule, once there is a champion to compare with
    if evidence.champion is not None and theirs is not None:
        degradation = assess(
            ev,
            trigger,
            evidence.y_true,
            evidence.champion,
            _labels(evidence),
            evidence.champion_trained,
            rng=rng.spawn(1)[0],  # the comparison's resamples stay as they were
        )
        rule = compared_by = rule_for(ev, trigger, degradation)
        report["degradation"] = asdict(degradation)
        report["rule"] = asdict(rule) | {"label": rule.label}
        checks.extend(
            _compare(spec, rule, evidence, evidence.champion, ours, theirs, slices, rng, report)
        )
    else:
        if evidence.champion is not None:
            report["note"] = f"the champion has no {metric}: judged on the floor alone"
        report["slices"] = _slice_reports(spec, evidence, slices, {})
    checks.extend(
        CheckResult(
            name=f"slice[{column}]",
            figure=None,
            threshold=None,
            passed=False,
            detail=f"the holdout has no column {column!r}",
        )
        for column in missing_columns
    )
    if ev.min_score is not None:
        checks.append(
            CheckResult(
                name=f"{metric}_floor",
                figure=round(ours, 6),
                threshold=ev.min_score,
                passed=sign * (ours - ev.min_score) >= -EPSILON,
            )
        )
    checks.append(
        CheckResult(
            name="latency_p95_ms",
            figure=round(evidence.latency_p95_ms, 3),
            threshold=ev.max_p95_ms,
            passed=evidence.latency_p95_ms <= ev.max_p95_ms,
        )
    )
    return _conclude(checks, ours, theirs, metric, report, compared_by)


def _compare(
    spec: ModelSpec,
    rule: Rule,
    evidence: Evidence,
    champion: Outputs,
    ours: float,
    theirs: float,
    slices: list[Slice],
    rng: np.random.Generator,
    report: dict[str, Any],
) -> list[CheckResult]:
    """The checks against the champion: the improvement, its uncertainty, every slice."""
    ev = spec.evaluator
    sign = 1.0 if HIGHER_IS_BETTER[ev.metric] else -1.0
    delta = sign * (ours - theirs)
    checks = [
        CheckResult(
            name=f"{ev.metric}_delta",
            figure=round(delta, 6),
            threshold=rule.min_delta,
            passed=delta >= rule.min_delta - EPSILON,
            detail=f"{rule.label}; challenger {ours:.4f} vs champion {theirs:.4f}",
        )
    ]
    overall, per_slice = paired_bootstrap(
        ev.metric,
        evidence.y_true,
        evidence.challenger,
        champion,
        _labels(evidence),
        higher_is_better=sign > 0,
        confidence=ev.confidence,
        resamples=ev.bootstrap,
        rng=rng,
        groups={s.name: s.mask for s in slices},
    )
    report["difference"] = {"estimate": delta, **_interval_report(overall, ev)}
    test = None
    if spec.task == "classification":
        test = mcnemar(
            evidence.y_true,
            evidence.challenger.predictions,
            champion.predictions,
            bound=rule.min_bound,
        )
        report["difference"]["mcnemar"] = asdict(test)
    checks.append(_uncertainty_check(ev, rule, overall, test))
    report["slices"] = _slice_reports(spec, evidence, slices, per_slice)
    checks.extend(_slice_checks(ev, report["slices"]))
    return checks


def _conclude(
    checks: list[CheckResult],
    ours: float,
    theirs: float | None,
    metric: str,
    report: dict[str, Any],
    rule: Rule | None,
) -> Verdict:
    """`rule`: the one the champion was compared by, named in the reason (None: no champion
    to compare with)."""
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(
            f"{c.name}: {c.detail}"
            if c.figure is None
            else f"{c.name} {c.figure} vs threshold {c.threshold}"
            for c in failed
        )
    elif theirs is None:
        reason = f"first version: {metric} {ours:.4f} clears every floor"
    else:
        reason = f"{metric} {ours:.4f} vs champion {theirs:.4f}: every check passed"
    if rule is not None:
        reason = f"{reason}; judged by {rule.label}: {rule.evidence}"
    report["checks"] = [c.model_dump() for c in checks]
    report["passed"] = not failed
    report["reason"] = reason
    return Verdict(
        not failed,
        ours,
        theirs,
        checks,
        reason,
        _json_safe(report),
        champion_degraded=rule is not None and rule.degraded,
    )


def _json_safe(value: Any) -> Any:
    """NaN and infinities as None: strict JSON (PostgreSQL's JSON type refuses NaN)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _unavailable(metric: str, who: str) -> CheckResult:
    return CheckResult(
        name=f"{metric}_available",
        figure=None,
        threshold=None,
        passed=False,
        detail=f"{metric} is not defined for this task or the {who}'s outputs",
    )


def _uncertainty_check(
    ev: EvaluatorSpec, rule: Rule, overall: Interval, test: McNemar | None
) -> CheckResult:
    bound = rule.min_bound
    if ev.uncertainty == "mcnemar" and test is not None:
        alpha = 1.0 - ev.confidence
        return CheckResult(
            name="accuracy_mcnemar_p",
            figure=round(test.p_value, 6),
            threshold=round(alpha, 6),
            passed=test.p_value <= alpha,
            detail=f"{rule.label}; H0: improvement <= {bound:g}; challenger alone right on "
            f"{test.better} rows, champion alone on {test.worse}",
        )
    return CheckResult(
        name=f"{ev.metric}_delta_lower_bound",
        figure=None if np.isnan(overall.low) else round(overall.low, 6),
        threshold=round(bound, 6),
        passed=bool(overall.low >= bound - EPSILON),  # NaN (never defined) fails
        detail=f"{rule.label}; one-sided {ev.confidence:.0%} bound, paired bootstrap of "
        f"{overall.valid} resamples; interval [{overall.low:.4f}, {overall.high:.4f}]",
    )


def _interval_report(interval: Interval, ev: EvaluatorSpec) -> dict[str, Any]:
    return {
        "ci_low": interval.low,
        "ci_high": interval.high,
        "confidence": ev.confidence,
        "resamples": interval.valid,
        "method": "paired percentile bootstrap; low/high are one-sided bounds",
    }


def _labels(evidence: Evidence, mask: BoolArray | None = None) -> list[Any] | None:
    """Labels the resampled metrics use: binary keeps both classes (the last is positive);
    more classes: those that occur in the labels or either model's predictions (of the rows
    in `mask`), as scikit-learn's macro averages do."""
    classes = evidence.classes
    if classes is None or len(classes) == 2:
        return classes
    outputs = [evidence.challenger] + ([evidence.champion] if evidence.champion else [])
    arrays = [evidence.y_true, *(o.predictions for o in outputs)]
    seen: set[Any] = set()
    for values in arrays:
        seen |= set((values if mask is None else values[mask]).tolist())
    return [c for c in classes if c in seen]


def _metrics(task: str, evidence: Evidence, outputs: Outputs) -> dict[str, float]:
    return holdout_metrics(
        task, evidence.y_true, outputs.predictions, outputs.proba, evidence.classes
    )


def _model_report(
    task: str, evidence: Evidence, outputs: Outputs, metrics: dict[str, float]
) -> dict[str, Any]:
    out: dict[str, Any] = {"metrics": metrics}
    if task == "classification" and evidence.classes is not None:
        out["confusion"] = confusion(evidence.y_true, outputs.predictions, evidence.classes)
    return out


def _slices(ev: EvaluatorSpec, evidence: Evidence) -> tuple[list[Slice], list[str]]:
    found: list[Slice] = []
    missing: list[str] = []
    for wanted in ev.slices:
        values = evidence.columns.get(wanted.column)
        if values is None:
            missing.append(wanted.column)
        else:
            found.extend(slices_of(np.asarray(values), wanted))
    return found, missing


def _slice_reports(
    spec: ModelSpec, evidence: Evidence, slices: list[Slice], intervals: Mapping[str, Interval]
) -> list[dict[str, Any]]:
    ev = spec.evaluator
    sign = 1.0 if HIGHER_IS_BETTER[ev.metric] else -1.0
    out = []
    for piece in slices:
        rows = int(piece.mask.sum())
        y = evidence.y_true[piece.mask]
        labels = _labels(evidence, piece.mask)
        ours = _slice_metric(ev.metric, y, evidence.challenger.take(piece.mask), labels)
        entry: dict[str, Any] = {
            "column": piece.column,
            "slice": piece.label,
            "name": piece.name,
            "rows": rows,
            "challenger": ours,
        }
        if evidence.champion is not None:
            theirs = _slice_metric(ev.metric, y, evidence.champion.take(piece.mask), labels)
            delta = sign * (ours - theirs) if ours is not None and theirs is not None else None
            judged = delta is not None and rows >= ev.min_slice_rows
            entry |= {"champion": theirs, "delta": delta, "judged": judged}
            if piece.name in intervals:
                entry |= {
                    "ci_low": _finite(intervals[piece.name].low),
                    "ci_high": _finite(intervals[piece.name].high),
                }
        if spec.task == "classification" and evidence.classes is not None and rows:
            entry["confusion"] = confusion(
                y, evidence.challenger.predictions[piece.mask], evidence.classes
            )
        out.append(entry)
    return out


def _slice_checks(ev: EvaluatorSpec, reports: list[dict[str, Any]]) -> list[CheckResult]:
    return [
        CheckResult(
            name=f"slice[{r['name']}].{ev.metric}_delta",
            figure=round(r["delta"], 6),
            threshold=-ev.slice_tolerance,
            passed=r["delta"] >= -ev.slice_tolerance - EPSILON,
            detail=f"{r['rows']} rows: challenger {r['challenger']:.4f} vs champion "
            f"{r['champion']:.4f}",
        )
        for r in reports
        if r.get("judged")
    ]


def _slice_metric(
    metric: str, y: npt.NDArray[Any], outputs: Outputs, labels: list[Any] | None
) -> float | None:
    if len(y) == 0:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        value = weighted_metric(metric, y, outputs, labels, np.ones((1, len(y))))[0]
    return _finite(float(value))


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None
