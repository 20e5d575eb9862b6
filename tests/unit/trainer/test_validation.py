"""The validation gate: clean recent rows pass every check, and each corruption fails its own
check with a detail that names the column and the figures."""

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
    LABEL_FLIP_MARGIN,
    ChampionEvidence,
    check_label_flips,
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
ERROR = 0.2  # the rule below is the "champion"; labels disagree with it this often


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


def evidence(recent: pd.DataFrame) -> ChampionEvidence:
    return ChampionEvidence(predictions=list(rule(recent)), error_rate=ERROR)


def run(
    recent: pd.DataFrame, spec: ModelSpec = SPEC, reference: pd.DataFrame = REFERENCE
) -> dict[str, CheckResult]:
    ts = assemble(recent, reference, spec)
    champion = evidence(ts.frame.iloc[: ts.recent_rows])
    checks = validate(ts, spec, reference=reference, champion=champion)
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
        "duplicates",
        "column_types",
        "value_range",
        "unseen_categories",
        "missing_rate",
        "label_shift",
        "label_flip",
    }
    assert failed(checks) == set(), [c for c in checks.values() if not c.passed]
    assert all(c.threshold is not None for n, c in checks.items() if n != "extra_columns")


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


def everyone_churns(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(churned=np.where(np.arange(len(f)) % 20 == 0, 0, 1))


def replayed(f: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([f.head(200), pd.concat([f.head(1)] * 300)], ignore_index=True)


def flipped(f: pd.DataFrame) -> pd.DataFrame:
    flip = np.arange(len(f)) % 10 != 0  # nine labels in ten flipped
    return f.assign(churned=np.where(flip, 1 - f["churned"], f["churned"]))


@pytest.mark.parametrize(
    ("corrupt", "check", "named"),
    [
        (drop_plan, "columns_present", "plan"),
        (tenure_as_words, "column_types", "tenure"),
        (charges_in_cents, "value_range", "monthly_charges"),
        (new_plan, "unseen_categories", "plan: 0.3"),
        (charges_missing, "missing_rate", "monthly_charges"),
        (everyone_churns, "label_shift", "churned"),
        (replayed, "duplicates", "300"),
        (flipped, "label_flip", "churned disagrees"),
    ],
    ids=["missing", "types", "range", "unseen", "missing-rate", "label-shift", "dupes", "flip"],
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
    assert "outside [" in detail
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
    assert names == {"columns_present", "extra_columns", "min_rows", "label_classes", "duplicates"}
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

    checks = run(recent, spec, reference)

    assert checks["unseen_categories"].passed
    assert "customer_id" in checks["unseen_categories"].detail


def test_a_regression_target_is_checked_for_a_mean_shift_in_reference_std_units() -> None:
    spec = SPEC.model_copy(update={"task": "regression"})
    recent = customers(500, seed=10)

    clean = run(recent, spec)
    shifted = run(recent.assign(churned=recent["churned"] + 5), spec)

    assert clean["label_shift"].passed
    assert not shifted["label_shift"].passed
    assert (shifted["label_shift"].figure or 0) > validation.LABEL_MAX_MEAN_SHIFT


@pytest.mark.parametrize(
    ("labels", "champion", "why"),
    [
        (pd.Series([1, 0] * 20), ChampionEvidence([0, 1] * 20, 0.1), "fewer than"),
        (pd.Series([1, 0] * 100), ChampionEvidence([0, 1] * 100, None), "accuracy is unknown"),
        (pd.Series([1, 0] * 100), ChampionEvidence(None, 0.1, problem="bad"), "bad"),
    ],
    ids=["few-rows", "no-accuracy", "no-predictions"],
)
def test_the_label_flip_check_is_skipped_without_enough_evidence(
    labels: pd.Series, champion: ChampionEvidence, why: str
) -> None:
    result = check_label_flips(labels, champion)

    assert result.passed
    assert result.figure is None
    assert why in result.detail


def test_the_label_flip_threshold_is_the_error_rate_plus_the_margin() -> None:
    labels = pd.Series([0] * 100 + [1] * 100)
    predictions = [1] * 60 + [0] * 40 + [0] * 60 + [1] * 40  # 60 + 60 of 200 disagree: 0.60

    lenient = check_label_flips(labels, ChampionEvidence(predictions, 0.25))
    strict = check_label_flips(labels, ChampionEvidence(predictions, 0.1))

    assert (lenient.figure, lenient.passed) == (0.6, True)
    assert lenient.threshold == pytest.approx(0.25 + LABEL_FLIP_MARGIN)
    assert (strict.figure, strict.passed) == (0.6, False)
    assert strict.threshold == pytest.approx(0.1 + LABEL_FLIP_MARGIN)
