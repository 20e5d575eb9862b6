"""A canary step's metric check with the figures' noise (`canary.metric_confidence`): a drop
the labels cannot tell from `max_metric_drop` holds the step's weight for more labels; a drop
surely beyond it rolls back, one surely within it passes; at `monitor.window` labels the point
estimates decide. Without standard errors (an older monitor) or with the knob off, the point
estimates decide at once, as before."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from helpers import evaluation_passed

from driftloop.deployer.domain import rollout as machine
from driftloop.deployer.domain.rollout import Counters, Observation, Rollout, Stage
from driftloop.shared.events import RolledBack, RolloutAdvanced
from driftloop.shared.routes import Served
from driftloop.shared.spec import ModelSpec

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
V1 = Served(version="1", run_id="run-1")


def spec(confidence: float | None = 0.95, window: int = 2000) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "model": "churn",
            "target": "churned",
            "monitor": {"window": window},
            "deployer": {
                "shadow": {"rows": 0},
                "canary": {
                    "steps": [10, 50, 100],
                    "rows_per_step": 200,
                    "min_labels": 20,
                    "metric_confidence": confidence,
                },
            },
        }
    )


def at_first_step(model_spec: ModelSpec) -> Rollout:
    start = machine.start(evaluation_passed(), V1, model_spec, now=NOW).rollout
    weight = model_spec.deployer.canary.steps[0]
    return replace(start, step=0, weight=weight, baseline=Counters(rows=0), rows_reached_at=NOW)


def accuracy(challenger: float, n: int, champion: float, m: int) -> Observation:
    """The monitor's answer: accuracies with their binomial standard errors."""
    return Observation(
        challenger=Counters(rows=max(n, 200)),
        metric="accuracy",
        challenger_metric=challenger,
        challenger_labels=n,
        champion_metric=champion,
        champion_labels=m,
        challenger_metric_se=math.sqrt(challenger * (1 - challenger) / n),
        champion_metric_se=math.sqrt(champion * (1 - champion) / m),
    )


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_a_drop_within_noise_holds_the_step_for_more_labels() -> None:
    # 0.78 vs 0.80 on 200 and 1000 labels: the 0.02 drop could be 0 or 0.08
    model_spec = spec()
    held = machine.analyse(
        at_first_step(model_spec), accuracy(0.78, 200, 0.80, 1000), model_spec, now=later(5)
    )
    assert held is None  # the weight stays; the next look has more labels


def test_a_drop_surely_beyond_the_bound_rolls_back() -> None:
    model_spec = spec()
    transition = machine.analyse(
        at_first_step(model_spec), accuracy(0.60, 400, 0.80, 1000), model_spec, now=later(5)
    )
    assert transition is not None
    assert transition.rollout.stage is Stage.ROLLED_BACK
    rolled = transition.events[0]
    assert isinstance(rolled, RolledBack)
    assert rolled.check is not None
    assert rolled.check.name == "accuracy_drop"
    assert "one-sided" in rolled.check.detail


def test_a_drop_surely_within_the_bound_passes() -> None:
    model_spec = spec()
    transition = machine.analyse(
        at_first_step(model_spec), accuracy(0.85, 800, 0.80, 1500), model_spec, now=later(5)
    )
    assert transition is not None
    assert transition.rollout.stage is Stage.CANARY
    assert transition.rollout.weight == 50
    assert isinstance(transition.events[0], RolloutAdvanced)


@pytest.mark.parametrize(
    ("challenger", "moved_to"), [(0.79, Stage.CANARY), (0.77, Stage.ROLLED_BACK)]
)
def test_at_the_window_the_point_estimates_decide(challenger: float, moved_to: Stage) -> None:
    model_spec = spec(window=300)
    transition = machine.analyse(
        at_first_step(model_spec), accuracy(challenger, 300, 0.80, 300), model_spec, now=later(5)
    )
    assert transition is not None
    assert transition.rollout.stage is moved_to


@pytest.mark.parametrize("knob_off", [True, False], ids=["confidence-null", "no-standard-errors"])
def test_without_the_noise_the_point_estimates_decide_at_once(knob_off: bool) -> None:
    model_spec = spec(confidence=None if knob_off else 0.95)
    seen = accuracy(0.77, 200, 0.80, 1000)
    if not knob_off:
        seen = replace(seen, challenger_metric_se=None)
    transition = machine.analyse(at_first_step(model_spec), seen, model_spec, now=later(5))
    assert transition is not None
    assert transition.rollout.stage is Stage.ROLLED_BACK  # 0.03 > 0.02, noise unknown
