"""Judging a challenger against the champion: pure, given both scores on the same holdout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from driftloop.shared.events import CheckResult
from driftloop.shared.modeling import HIGHER_IS_BETTER
from driftloop.shared.spec import ModelSpec


@dataclass(frozen=True)
class Verdict:
    passed: bool
    challenger_score: float
    champion_score: float | None
    checks: list[CheckResult]
    reason: str


def p95_ms(latencies_seconds: list[float]) -> float:
    return float(np.percentile(np.asarray(latencies_seconds) * 1000.0, 95))


def judge(
    spec: ModelSpec,
    *,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    latency_p95_ms: float,
) -> Verdict:
    """Pass when the challenger beats the champion by `min_delta` (or, with no champion,
    clears the absolute floor), and answers within the latency budget."""
    metric = spec.evaluator.metric
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    ours = challenger.get(metric)
    checks: list[CheckResult] = []
    if ours is None:
        checks.append(
            CheckResult(
                name=f"{metric}_available",
                figure=None,
                threshold=None,
                passed=False,
                detail=f"{metric} is not defined for this task",
            )
        )
        return Verdict(False, float("nan"), None, checks, f"{metric} could not be computed")
    theirs = champion.get(metric) if champion else None
    if theirs is not None:
        delta = sign * (ours - theirs)
        checks.append(
            CheckResult(
                name=f"{metric}_delta",
                figure=round(delta, 6),
                threshold=spec.evaluator.min_delta,
                passed=delta >= spec.evaluator.min_delta,
                detail=f"challenger {ours:.4f} vs champion {theirs:.4f}",
            )
        )
    if spec.evaluator.min_score is not None:
        floor = spec.evaluator.min_score
        checks.append(
            CheckResult(
                name=f"{metric}_floor",
                figure=round(ours, 6),
                threshold=floor,
                passed=sign * (ours - floor) >= 0,
            )
        )
    checks.append(
        CheckResult(
            name="latency_p95_ms",
            figure=round(latency_p95_ms, 3),
            threshold=spec.evaluator.max_p95_ms,
            passed=latency_p95_ms <= spec.evaluator.max_p95_ms,
        )
    )
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(f"{c.name} {c.figure} vs threshold {c.threshold}" for c in failed)
    elif theirs is None:
        reason = f"first version: {metric} {ours:.4f} clears every floor"
    else:
        reason = f"{metric} {ours:.4f} vs champion {theirs:.4f}"
    return Verdict(not failed, ours, theirs, checks, reason)
