"""The model spec: defaults, durations, and errors that name the wrong field."""

from __future__ import annotations

from datetime import timedelta

import pytest

from driftloop.shared.spec import ModelSpec, SpecError, parse_duration, parse_spec

DESIGN_EXAMPLE = """
model: churn
task: classification            # or regression
target: churned
features: [tenure, plan, monthly_charges]   # optional: default all but target
recipe:
  estimator: sklearn.ensemble.HistGradientBoostingClassifier
  params: {max_iter: 200}
monitor:
  window: 2000                  # predictions per drift window
  drift: {psi_warn: 0.2, psi_retrain: 0.25, min_features: 1}
  performance: {metric: accuracy, min: 0.85, min_labels: 200}
  schedule: null                # e.g. 7d
  min_new_labels: 1000          # data-volume trigger
  cooldown: 10m
trainer: {max_rows: 50000, min_rows: 500, holdout: 0.2}
evaluator: {metric: f1, min_delta: 0.0, max_p95_ms: 50}
deployer:
  shadow: {rows: 500}           # mirrored rows before the canary; 0 skips shadow
  canary: {steps: [10, 50, 100], rows_per_step: 500, max_error_rate: 0.01, max_metric_drop: 0.02}
  approval: auto                # or manual
"""


def test_design_example_parses_with_its_values() -> None:
    text = DESIGN_EXAMPLE

    spec = parse_spec(text)

    assert spec.model == "churn"
    assert spec.task == "classification"
    assert spec.target == "churned"
    assert spec.features == ["tenure", "plan", "monthly_charges"]
    assert spec.recipe.estimator == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert spec.recipe.params == {"max_iter": 200}
    assert spec.monitor.window == 2000
    assert spec.monitor.drift.psi_warn == pytest.approx(0.2)
    assert spec.monitor.drift.psi_retrain == pytest.approx(0.25)
    assert spec.monitor.drift.min_features == 1
    assert spec.monitor.performance.metric == "accuracy"
    assert spec.monitor.performance.min == pytest.approx(0.85)
    assert spec.monitor.performance.min_labels == 200
    assert spec.monitor.schedule is None
    assert spec.monitor.min_new_labels == 1000
    assert spec.monitor.cooldown == timedelta(minutes=10)
    assert (spec.trainer.max_rows, spec.trainer.min_rows) == (50_000, 500)
    assert spec.trainer.holdout == pytest.approx(0.2)
    assert spec.evaluator.metric == "f1"
    assert spec.evaluator.min_delta == pytest.approx(0.0)
    assert spec.evaluator.max_p95_ms == pytest.approx(50.0)
    assert spec.deployer.shadow.rows == 500
    assert spec.deployer.canary.steps == [10, 50, 100]
    assert spec.deployer.canary.rows_per_step == 500
    assert spec.deployer.canary.max_error_rate == pytest.approx(0.01)
    assert spec.deployer.canary.max_metric_drop == pytest.approx(0.02)
    assert spec.deployer.approval == "auto"


def test_minimal_spec_gets_every_default() -> None:
    text = "{model: churn, target: churned}"

    spec = parse_spec(text)

    assert spec.task == "classification"
    assert spec.features is None
    assert spec.recipe.estimator == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert spec.recipe.params == {}
    assert spec.monitor.window == 2000
    assert (spec.monitor.drift.psi_warn, spec.monitor.drift.psi_retrain) == (0.2, 0.25)
    assert spec.monitor.schedule is None
    assert spec.monitor.cooldown == timedelta(minutes=10)
    assert spec.trainer.holdout == pytest.approx(0.2)
    assert spec.trainer.label_wait == timedelta(minutes=30)
    assert spec.evaluator.metric == "f1"
    assert spec.evaluator.min_score is None
    assert spec.deployer.shadow.rows == 500
    assert spec.deployer.canary.steps == [10, 50, 100]
    assert spec.deployer.approval == "auto"


def test_minimal_spec_equals_the_example_where_the_example_states_defaults() -> None:
    minimal = parse_spec("{model: churn, target: churned}")

    example = parse_spec(DESIGN_EXAMPLE)

    assert minimal.deployer == example.deployer
    assert minimal.trainer.max_rows == example.trainer.max_rows


def test_spec_read_back_from_kv_json_equals_the_applied_spec() -> None:
    spec = parse_spec(DESIGN_EXAMPLE)

    again = ModelSpec.model_validate_json(spec.to_json())

    assert again == spec


def test_spec_json_can_be_applied_again() -> None:
    spec = parse_spec(DESIGN_EXAMPLE)

    again = parse_spec(spec.to_json())

    assert again == spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("7d", timedelta(days=7)),
        ("2h", timedelta(hours=2)),
        ("250ms", timedelta(milliseconds=250)),
        (" 1.5m ", timedelta(seconds=90)),
    ],
    ids=["seconds", "minutes", "days", "hours", "milliseconds", "fraction-and-spaces"],
)
def test_durations_parse_in_spec_fields(text: str, expected: timedelta) -> None:
    yaml_text = (
        f"{{model: churn, target: churned, monitor: {{cooldown: '{text}', schedule: '{text}'}}}}"
    )

    spec = parse_spec(yaml_text)

    assert spec.monitor.cooldown == expected
    assert spec.monitor.schedule == expected


def test_bare_number_duration_is_seconds() -> None:
    value = 45

    duration = parse_duration(value)

    assert duration == timedelta(seconds=45)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{model: churn, target: churned, monitor: {window: lots}}", "monitor.window"),
        ("{model: churn, target: churned, monitr: {window: 10}}", "monitr"),
        ("{model: churn, target: churned, task: clustering}", "task"),
        ("{model: churn, target: churned, monitor: {cooldown: soon}}", "monitor.cooldown"),
        ("{model: churn, target: churned, monitor: {cooldown: 10y}}", "monitor.cooldown"),
        (
            "{model: churn, target: churned, monitor: {drift: {psi_warn: 0.3, psi_retrain: 0.1}}}",
            "monitor.drift.psi_retrain",
        ),
        ("{model: churn, target: churned, features: [tenure, churned]}", "features"),
        ("{model: churn, target: churned, trainer: {holdout: 1.5}}", "trainer.holdout"),
        ("{model: churn, target: churned, evaluator: {metric: vibes}}", "evaluator.metric"),
        ("{model: churn, target: churned, deployer: {approval: maybe}}", "deployer.approval"),
        (
            "{model: churn, target: churned, deployer: {canary: {max_error_rate: 2}}}",
            "deployer.canary.max_error_rate",
        ),
        ("{model: churn, target: churned, recipe: {estimator: os.system}}", "recipe.estimator"),
        (
            "{model: churn, target: churned, recipe: {estimator: sklearn.datasets.clear_data_home,"
            " params: {data_home: /tmp}}}",
            "recipe.estimator",
        ),
        (
            "{model: churn, target: churned, recipe: {estimator: sklearn.linear_model.enet_path}}",
            "recipe.estimator",
        ),
        (
            "{model: churn, target: churned, recipe: {estimator: sklearn.ensemble}}",
            "recipe.estimator",
        ),
        ("{model: 'bad name!', target: churned}", "model"),
        ("{model: churn}", "target"),
    ],
    ids=[
        "window-not-a-number",
        "unknown-top-level-key",
        "unknown-task",
        "duration-not-a-duration",
        "duration-unknown-unit",
        "psi-retrain-below-warn",
        "target-among-features",
        "holdout-out-of-range",
        "unknown-evaluator-metric",
        "unknown-approval-mode",
        "error-rate-above-one",
        "estimator-outside-sklearn",
        "estimator-a-function-of-a-module-not-allowed",
        "estimator-a-function-of-an-allowed-module",
        "estimator-a-module",
        "model-name-with-spaces",
        "target-missing",
    ],
)
def test_wrong_field_is_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(text)

    assert str(caught.value).startswith(f"{field}:")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("- model: churn\n- target: churned\n", "mapping"),
        ("just a string", "mapping"),
        ("", "mapping"),
        ("model: churn\ntarget: [churned\n", "YAML"),
    ],
    ids=["yaml-list", "yaml-scalar", "empty-document", "invalid-yaml"],
)
def test_text_that_is_not_a_mapping_is_refused(text: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(text)

    assert words in str(caught.value)


def test_every_wrong_field_is_named_at_once() -> None:
    text = "{model: churn, target: churned, task: clustering, monitor: {window: lots}}"

    with pytest.raises(SpecError) as caught:
        parse_spec(text)

    assert "task:" in str(caught.value)
    assert "monitor.window:" in str(caught.value)


def test_regression_metrics_default_by_task() -> None:
    spec = parse_spec("model: price\ntask: regression\ntarget: y\n")

    assert spec.evaluator.metric == "rmse"
    assert spec.monitor.performance.metric == "rmse"
    assert spec.monitor.performance.min is None


def test_a_metric_of_the_other_task_is_refused_naming_the_field() -> None:
    with pytest.raises(SpecError, match=r"evaluator\.metric"):
        parse_spec("model: price\ntask: regression\ntarget: y\nevaluator: {metric: f1}\n")
