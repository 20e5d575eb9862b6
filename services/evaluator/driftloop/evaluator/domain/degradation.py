"""Whether a cycle has evidence that the champion is degraded on the current distribution:
what picks the lenient rule (docs/evaluation.md). Pure.

- `performance`: yes. The monitor measured the champion's live metric below its floor.
- `drift`: only when the champion's figures show it. Its metric on the challenger's holdout
  (rows served after the drift began) is below the spec's floor (`evaluator.min_score`), or is
  measurably below what it scored on its own holdout when it was trained. "Measurably" means
  the `confidence` bound of its bootstrap interval toward "not degraded" is still worse than
  that figure. A drift that leaves the champion as good as it was is no reason to take a
  challenger that is merely not worse.
- `manual`, `schedule`, `volume`, `bootstrap`: no.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from driftloop.evaluator.domain.resampling import Outputs, weighted_metric
from driftloop.evaluator.domain.uncertainty import bootstrap_interval
from driftloop.shared.events import Trigger
from driftloop.shared.modeling import HIGHER_IS_BETTER
from driftloop.shared.spec import EvaluatorSpec


@dataclass(frozen=True)
class Degradation:
    """The evidence, and why it counts or not. `figure`: the champion's metric on this
    holdout; `bound`: its confidence bound toward "not degraded" (the upper one when higher is
    better); `trained`: its metric on its own holdout when it was trained."""

    degraded: bool
    why: str
    figure: float | None = None
    bound: float | None = None
    trained: float | None = None


def assess(
    ev: EvaluatorSpec,
    trigger: Trigger,
    y_true: npt.NDArray[Any],
    champion: Outputs | None,
    classes: Sequence[Any] | None,
    trained: Mapping[str, float] | None,
    *,
    rng: np.random.Generator,
) -> Degradation:
    """The evidence a cycle started by `trigger` has that the `champion` (its outputs on the
    holdout `y_true`; `trained`: its figures when it was trained) is degraded."""
    metric = ev.metric
    if trigger == "performance":
        return Degradation(True, "the monitor measured its live metric below the floor")
    if trigger != "drift" or champion is None:
        return Degradation(False, f"a {trigger} trigger carries no evidence")
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        figure = float(
            weighted_metric(metric, y_true, champion, classes, np.ones((1, len(y_true))))[0]
        )
    if not np.isfinite(figure):
        return Degradation(False, f"its {metric} on the holdout is undefined")
    if ev.min_score is not None and sign * (figure - ev.min_score) < 0:
        return Degradation(
            True,
            f"its {metric} {figure:.4f} after the drift is below the floor {ev.min_score}",
            figure=figure,
        )
    reference = (trained or {}).get(metric)
    if reference is None or not np.isfinite(reference):
        return Degradation(False, f"drift, but its {metric} when trained is unknown", figure=figure)
    interval = bootstrap_interval(
        metric,
        y_true,
        champion,
        classes,
        confidence=ev.confidence,
        resamples=ev.bootstrap,
        rng=rng,
    )
    bound = interval.high if sign > 0 else interval.low
    if not np.isfinite(bound):
        return Degradation(False, f"its {metric} cannot be resampled", figure=figure)
    degraded = sign * (bound - reference) < 0
    at = f"{'at most' if sign > 0 else 'at least'} {bound:.4f} at {ev.confidence:g} confidence"
    if degraded:
        why = (
            f"drift, and its {metric} after it, {figure:.4f} ({at}), is measurably "
            f"{'below' if sign > 0 else 'above'} the {reference:.4f} it scored when trained"
        )
    else:
        why = (
            f"drift, but its {metric} after it, {figure:.4f} ({at}), is not measurably "
            f"{'below' if sign > 0 else 'above'} the {reference:.4f} it scored when trained"
        )
    return Degradation(degraded, why, figure=figure, bound=bound, trained=reference)
