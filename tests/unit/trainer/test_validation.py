"""The validation gate: clean recent rows pass every check, and each corruption fails its own
check with a detail that names the column and the figures. The feature checks judge the recent
rows against what was served, so drift that was served passes; the label balance's move is
reported, never a gate."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from driftloop.shared.events import CheckResult
from driftloop.shared.spec import ModelSpec, TrainerSpec
from driftloop.trainer.domain import validation
from driftloop.trainer.domain.dataset import assemble, validate
from driftloop.trainer.domain.validation import (
    check_value_ranges,
    reference_range,
    total_variation,
)

FEATURES = ["tenure", "monthly_charges", "plan", "autopay"]
SPEC = ModelSpec(
    model="churn",
    target="churned",
    features=FEATURES,
    trainer=TrainerSpec(max_rows=3000, min_rows=100),
)
ERROR = 0.2  # labels disagree with the rule below this often


def rule(frame: pd.DataFrame) -> np.ndarray:
    tenure = pd.to_numeric(frame["tenure"], errors="coerce")
    return ((tenure < 20) & (frame["monthly_charges"] > 50)).to_numpy().astype(int)


def customers(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.gamma(2.0, 12.0, n).round(1),
            "monthly_charges": rng.normal(60, 15, n).round(2),
            "plan": rng.choice(["basic", "pro", "max"], n, p=[0.6, 0.3, 0.1]),
            "autopay": rng.random(n) < 0.5,
        }
    )
    noise = rng.random(n) < ERROR
    frame["churned"] = np.where(noise, 1 - rule(frame), rule(frame))
    return frame


REFERENCE = customers(2000, seed=1)
SERVED = customers(1500, seed=99).drop(columns="churned")  # the traffic of the same period


def run(
    recent: pd.DataFrame,
    spec: ModelSpec = SPEC,
    reference: pd.DataFrame = REFERENCE,
    served: pd.DataFrame | None = SERVED,
) -> dict[str, CheckResult]:
    ts = assemble(recent, reference, spec)
    checks = validate(ts, spec, reference=reference, served=served)
    return {c.name: c for c in checks}


def failed(checks: dict[str, CheckResult]) -> set[str]:
    return {name for name, c in checks.items() if not c.passed}


def test_clean_recent_rows_pass_every_check() -> None:
    checks = run(customers(500, seed=2))

    assert set(checks) == {
        "columns_present",
        "extra_columns",
        "min_rows",
        "label_classes",
        "finite_values",
        "duplicates",
        "column_types",
        "value_range",
        "unseen_categories",
        "missing_rate",
        "label_shift",
        "label_issues",
    }
    assert failed(checks) == set(), [c for c in checks.values() if not c.passed]
    reported = {"extra_columns", "label_shift"}
    assert all(c.threshold is not None for n, c in checks.items() if n not in reported)


def drop_plan(f: pd.DataFrame) -> pd.DataFrame:
    return f.drop(columns="plan")


def tenure_as_words(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(tenure=np.where(f["tenure"] > 24, "long", "short"))


def charges_in_cents(f: pd.DataFrame) -> pd.DataFrame:
    out = f.copy()
    out.loc[: len(f) // 10, "monthly_charges"] *= 100
    return out


def new_plan(f: pd.DataFrame) -> pd.DataFrame:
    out = f.copy()
    out.loc[: len(f) // 3, "plan"] = "platinum"
    return out


def charges_missing(f: pd.DataFrame) -> pd.DataFrame:
    out = f.copy()
    out.loc[: len(f) // 3, "monthly_charges"] = np.nan
    return out


def charges_infinite(f: pd.DataFrame) -> pd.DataFrame:
    out = f.copy()
    out.loc[:4, "monthly_charges"] = np.inf
    return out


def replayed(f: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([f.head(200), pd.concat([f.head(1)] * 300)], ignore_index=True)


def flipped(f: pd.DataFrame) -> pd.DataFrame:
    flip = np.random.default_rng(11).random(len(f)) < 0.4  # four labels in ten, at random
    return f.assign(churned=np.where(flip, 1 - f["churned"], f["churned"]))


@pytest.mark.parametrize(
    ("corrupt", "check", "named"),
    [
        (drop_plan, "columns_present", "plan"),
        (tenure_as_words, "column_types", "tenure"),
        (charges_in_cents, "value_range", "monthly_charges"),
        (new_plan, "unseen_categories", "plan: 0.3"),
        (charges_missing, "missing_rate", "monthly_charges"),
        (charges_infinite, "finite_values", "monthly_charges: 5 infinite"),
        (replayed, "duplicates", "300"),
        (flipped, "label_issues", "churned: 0."),
    ],
    ids=["missing", "types", "range", "unseen", "missing-rate", "infinite", "dupes", "flip"],
)
def test_each_corruption_fails_its_check_naming_what_is_wrong(
    corrupt: Callable[[pd.DataFrame], pd.DataFrame], check: str, named: str
) -> None:
    clean = customers(500, seed=3)

    checks = run(corrupt(clean))

    assert check in failed(checks)
    result = checks[check]
    assert result.figure is not None
    assert result.threshold is not None
    assert result.figure > result.threshold or check == "columns_present"
    assert named in result.detail


def test_the_detail_names_the_column_and_its_figures() -> None:
    checks = run(charges_in_cents(customers(500, seed=4)))

    detail = checks["value_range"].detail
    assert detail.startswith("monthly_charges: 0.")
    assert "outside the served range [" in detail
    assert "1500 served rows" in detail
    assert "tenure" not in detail
    assert "missing rate" not in checks["missing_rate"].detail


def test_a_few_outliers_stay_under_the_range_threshold() -> None:
    recent = customers(500, seed=5)
    recent.loc[:3, "monthly_charges"] = 10_000.0  # under 1% of the rows

    result = check_value_ranges(recent, REFERENCE, ["monthly_charges"])

    assert result.passed
    assert 0 < (result.figure or 0) <= validation.RANGE_MAX_SHARE


def test_the_reference_range_widens_the_extreme_quantiles_by_k_iqr() -> None:
    values = pd.Series(np.arange(1001, dtype=float))

    low, high = reference_range(values)

    assert low == pytest.approx(1.0 - validation.RANGE_IQR_FACTOR * 500)
    assert high == pytest.approx(999.0 + validation.RANGE_IQR_FACTOR * 500)


def test_total_variation_is_zero_for_equal_shares_and_one_for_disjoint_labels() -> None:
    assert total_variation(pd.Series([0, 1, 0, 1]), pd.Series([1, 0])) == 0
    assert total_variation(pd.Series([0, 0]), pd.Series([1, 1])) == 1
    assert total_variation(pd.Series([0, 0, 0, 1]), pd.Series([0, 1])) == pytest.approx(0.25)


def test_at_bootstrap_the_reference_checks_are_skipped() -> None:
    ts = assemble(customers(500, seed=6), None, SPEC)

    checks = validate(ts, SPEC)

    names = {c.name for c in checks}
    assert names == {
        "columns_present",
        "extra_columns",
        "min_rows",
        "label_classes",
        "finite_values",
        "duplicates",
    }
    assert all(c.passed for c in checks)


def test_extra_columns_are_ignored_when_the_spec_lists_its_features() -> None:
    checks = run(customers(500, seed=7).assign(customer_id="x"))

    assert checks["extra_columns"].passed
    assert "customer_id" in checks["extra_columns"].detail


def test_a_column_the_reference_lacks_fails_when_every_column_is_a_feature() -> None:
    spec = SPEC.model_copy(update={"features": None})

    checks = run(customers(500, seed=8).assign(customer_id="x"), spec)

    assert "extra_columns" in failed(checks)
    assert "customer_id" in checks["extra_columns"].detail


def test_identifier_like_categories_are_not_checked_for_unseen_values() -> None:
    spec = SPEC.model_copy(update={"features": [*FEATURES, "customer_id"]})
    reference = REFERENCE.assign(customer_id=[f"c{i}" for i in range(len(REFERENCE))])
    recent = customers(500, seed=9).assign(customer_id=[f"n{i}" for i in range(500)])

    checks = run(recent, spec, reference, served=recent.drop(columns="churned"))

    assert checks["unseen_categories"].passed
    assert "customer_id" in checks["unseen_categories"].detail


def test_a_moved_label_balance_is_reported_and_never_gates() -> None:
    recent = customers(500, seed=10)
    everyone_churns = recent.assign(churned=np.where(np.arange(500) % 20 == 0, 0, 1))

    checks = run(everyone_churns)

    shift = checks["label_shift"]
    assert shift.passed
    assert shift.threshold is None
    assert (shift.figure or 0) > 0.5
    assert "reported, not a gate" in shift.detail


def test_a_regression_target_mean_shift_is_reported_in_reference_std_units() -> None:
    spec = SPEC.model_copy(update={"task": "regression"})
    recent = customers(500, seed=10)

    shifted = run(recent.assign(churned=recent["churned"] + 5), spec)

    assert shifted["label_shift"].passed
    assert (shifted["label_shift"].figure or 0) > 5
    assert "reported, not a gate" in shifted["label_shift"].detail
    assert shifted["label_issues"].passed
    assert "skipped" in shifted["label_issues"].detail


def drifted(f: pd.DataFrame) -> pd.DataFrame:
    """Values far outside the old training range (tenure + 200 months, charges x 3)."""
    return f.assign(tenure=f["tenure"] + 200, monthly_charges=f["monthly_charges"] * 3)


def test_values_outside_the_old_range_pass_when_they_are_what_was_served() -> None:
    recent = drifted(customers(500, seed=12))
    served = drifted(customers(1500, seed=13)).drop(columns="churned")

    checks = run(recent, served=served)
    against_the_old_set = check_value_ranges(recent, REFERENCE, FEATURES)

    assert checks["value_range"].passed, checks["value_range"].detail
    assert checks["value_range"].figure == 0
    assert not against_the_old_set.passed  # what the old gate refused


def test_labelled_rows_unlike_the_served_traffic_fail_the_range_check() -> None:
    recent = drifted(customers(500, seed=14))

    checks = run(recent, served=SERVED)

    assert not checks["value_range"].passed
    assert "outside the served range" in checks["value_range"].detail


def test_without_served_rows_the_served_checks_are_skipped() -> None:
    checks = run(customers(500, seed=15), served=None)

    assert not {"value_range", "unseen_categories", "missing_rate"} & set(checks)
    assert checks["column_types"].passed
