"""The live window's figures: the offline report's statistics from bin counts and bounded
reservoir samples, checked against `stats.drift_report` and scipy on fixed seeds."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from driftloop.monitor.domain import reservoir
from driftloop.monitor.domain import stats as offline
from driftloop.monitor.domain.drift import (
    DriftReport,
    Window,
    add_batch,
    compact,
    compaction_due,
    drift_report,
)
from driftloop.shared.events import FeatureDrift
from driftloop.shared.profile import ReferenceProfile, build_profile
from driftloop.shared.spec import DriftPolicy

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
POLICY = DriftPolicy(psi_warn=0.2, psi_retrain=0.25)


def feed(
    profile: ReferenceProfile,
    frame: pd.DataFrame,
    *,
    batch: int = 100,
    capacity: int = reservoir.CAPACITY,
    window: Window | None = None,
) -> Window:
    """The frame's rows through add_batch, `batch` rows at a time, compacting as the store
    does when the replacements outnumber the reservoir."""
    window = window or Window()
    records = frame.to_dict(orient="records")
    for i in range(0, len(records), batch):
        at = T0 + timedelta(seconds=i)
        window = add_batch(window, profile, records[i : i + batch], at, capacity=capacity)
        if compaction_due(window, capacity=capacity):
            window = compact(window, capacity=capacity)
    return window


def live(profile: ReferenceProfile, current: pd.DataFrame) -> dict[str, FeatureDrift]:
    report = drift_report(profile, feed(profile, current), POLICY)
    return {f.feature: f for f in report.features}


def frames(seed: int, n_ref: int, n_cur: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame(
        {
            "tenure": rng.gamma(2.0, 12.0, n_ref).round(1),
            "charges": rng.normal(70.0, 20.0, n_ref),
            "plan": rng.choice(["basic", "pro", "max"], n_ref, p=[0.6, 0.3, 0.1]),
        }
    )
    current = pd.DataFrame(
        {
            "tenure": rng.gamma(2.3, 12.0, n_cur).round(1),
            "charges": rng.normal(72.0, 22.0, n_cur),
            "plan": rng.choice(["basic", "pro", "max", "new"], n_cur, p=[0.5, 0.3, 0.1, 0.1]),
        }
    )
    return reference, current


# Live equals offline when nothing is sampled away -------------------------------------------


@pytest.mark.parametrize(
    ("seed", "n_ref", "n_cur"),
    [(1, 2000, 2000), (2, 1500, 700), (3, 400, 1999)],
    ids=["full", "smaller-window", "small-reference"],
)
def test_live_figures_equal_the_offline_report_when_the_samples_hold_every_row(
    seed: int, n_ref: int, n_cur: int
) -> None:
    reference, current = frames(seed, n_ref, n_cur)
    profile = build_profile("churn", reference, list(reference.columns))

    got = live(profile, current)

    want = offline.drift_report(reference, current)["features"]
    for name in ("tenure", "charges"):
        f, w = got[name], want[name]
        assert f.ks_statistic == pytest.approx(w["ks"]["statistic"], rel=1e-12), name
        assert f.ks_pvalue == pytest.approx(w["ks"]["pvalue"], rel=1e-9), name
        assert f.wasserstein == pytest.approx(w["wasserstein"], rel=1e-9), name
        assert f.jensen_shannon == pytest.approx(w["jensen_shannon"], rel=1e-9), name
        assert f.psi == pytest.approx(w["psi"], abs=1e-6), name  # live PSI is rounded to 1e-6
        assert (f.chi2_statistic, f.chi2_pvalue) == (None, None)
    plan = got["plan"]
    assert plan.chi2_statistic == pytest.approx(want["plan"]["chi2"]["statistic"], rel=1e-9)
    assert plan.chi2_pvalue == pytest.approx(want["plan"]["chi2"]["pvalue"], rel=1e-9)
    assert plan.jensen_shannon == pytest.approx(want["plan"]["jensen_shannon"], rel=1e-9)
    assert plan.psi == pytest.approx(want["plan"]["psi"], abs=1e-6)  # "new" fills OTHER
    assert (plan.ks_statistic, plan.ks_pvalue, plan.wasserstein) == (None, None, None)


def test_live_figures_agree_with_scipy() -> None:
    reference, current = frames(4, 2000, 1500)
    profile = build_profile("churn", reference, list(reference.columns))

    got = live(profile, current)

    for name in ("tenure", "charges"):
        ks = stats.ks_2samp(reference[name], current[name])
        assert got[name].ks_statistic == pytest.approx(ks.statistic, rel=1e-12)
        assert got[name].ks_pvalue == pytest.approx(ks.pvalue, rel=1e-9)
        assert got[name].wasserstein == pytest.approx(
            stats.wasserstein_distance(reference[name], current[name]) / np.std(reference[name]),
            rel=1e-9,
        )
    categories = ["basic", "max", "pro", "new"]
    table = np.array(
        [[int((frame["plan"] == c).sum()) for c in categories] for frame in (reference, current)]
    )
    chi2 = stats.chi2_contingency(table, correction=False)
    assert got["plan"].chi2_statistic == pytest.approx(chi2.statistic, rel=1e-9)
    assert got["plan"].chi2_pvalue == pytest.approx(chi2.pvalue, rel=1e-9)
    assert got["plan"].jensen_shannon == pytest.approx(jensenshannon(*table, base=2), rel=1e-9)


def test_pvalues_are_adjusted_across_features_with_benjamini_hochberg() -> None:
    reference, current = frames(5, 2000, 1000)
    profile = build_profile("churn", reference, list(reference.columns))

    got = live(profile, current)

    raw = [got["tenure"].ks_pvalue, got["charges"].ks_pvalue, got["plan"].chi2_pvalue]
    expected = stats.false_discovery_control(raw, method="bh")
    adjusted = [got[n].pvalue_adjusted for n in ("tenure", "charges", "plan")]
    assert adjusted == pytest.approx(expected.tolist(), rel=1e-12)


def test_the_drift_decision_stays_on_psi() -> None:
    reference, current = frames(6, 2000, 2000)
    profile = build_profile("churn", reference, list(reference.columns))

    report = drift_report(profile, feed(profile, current), POLICY)

    for f in report.features:
        assert f.drifted is (f.psi >= POLICY.psi_warn)
    assert report.drifted == [f.feature for f in report.features if f.psi >= POLICY.psi_warn]


# Past the capacity ----------------------------------------------------------------------------


def test_a_reservoir_over_many_rows_is_a_uniform_sample_of_them() -> None:
    rng = np.random.default_rng(7)
    values = rng.gamma(2.0, 12.0, 200_000)
    segments: list[str] = []
    gen = np.random.default_rng(11)

    for i in range(0, values.size, 1000):
        segments += reservoir.extend(i, values[i : i + 1000], capacity=2000, rng=gen)
    kept = reservoir.sample(segments)

    assert kept.size == 2000
    assert np.isin(kept, values).all()
    assert stats.ks_2samp(kept, values).statistic < 0.03  # ~1.36/sqrt(2000) is the 5 % bound


def test_every_position_of_the_stream_is_kept_equally_often() -> None:
    positions = np.arange(1000, dtype=float)
    kept = np.zeros(10)

    for seed in range(300):
        gen = np.random.default_rng(seed)
        segments: list[str] = []
        for i in range(0, 1000, 37):  # odd batch sizes: the first ones straddle the capacity
            segments += reservoir.extend(i, positions[i : i + 37], capacity=100, rng=gen)
        kept += np.bincount(reservoir.sample(segments).astype(int) // 100, minlength=10)

    assert kept.sum() == 300 * 100
    assert stats.chisquare(kept).pvalue > 0.001


def test_the_latest_replacement_of_a_slot_wins() -> None:
    segments = [
        "v" + reservoir.encode(np.array([1.0, 2.0, 3.0])),
        "r" + reservoir.encode(np.array([0.0, 9.0, 0.0, 8.0])),
        "r" + reservoir.encode(np.array([2.0, 7.0])),
    ]

    assert reservoir.sample(segments).tolist() == [8.0, 2.0, 7.0]
    assert reservoir.replacements(segments) == 3
    assert reservoir.sample(reservoir.fold(segments)).tolist() == [8.0, 2.0, 7.0]


def test_the_same_batches_give_the_same_sample() -> None:
    reference, _ = frames(8, 2000, 10)
    _, current = frames(9, 10, 20_000)
    profile = build_profile("churn", reference, list(reference.columns))

    first = feed(profile, current)
    second = feed(profile, current)

    assert first.samples == second.samples
    assert reservoir.sample(first.samples["tenure"]).size == reservoir.CAPACITY


def test_figures_of_a_sampled_window_are_close_to_the_full_ones() -> None:
    reference, current = frames(10, 50_000, 60_000)
    profile = build_profile("churn", reference, list(reference.columns))

    got = live(profile, current)

    want = offline.drift_report(reference, current)["features"]
    for name in ("tenure", "charges"):
        assert got[name].ks_statistic == pytest.approx(want[name]["ks"]["statistic"], abs=0.03)
        assert got[name].wasserstein == pytest.approx(want[name]["wasserstein"], abs=0.05)
        assert got[name].jensen_shannon == pytest.approx(want[name]["jensen_shannon"], rel=1e-9)


def test_window_size_does_not_depend_on_the_rows_it_has_seen() -> None:
    reference, _ = frames(12, 5000, 10)
    _, small_rows = frames(13, 10, 5_000)
    _, large_rows = frames(14, 10, 200_000)
    profile = build_profile("churn", reference, list(reference.columns))

    small = feed(profile, small_rows, batch=500)
    large = feed(profile, large_rows, batch=500)

    assert (small.rows, large.rows) == (5_000, 200_000)
    assert len(large.model_dump_json()) < 2 * len(small.model_dump_json())
    # at most the reservoir, as many replacements (16 bytes each) and a batch, in base64
    bound = 2 * (reservoir.CAPACITY * 8 * 3 + 500 * 16) * 4 / 3 + 10_000
    assert len(large.model_dump_json()) < bound


# Old profiles and awkward data ----------------------------------------------------------------


def test_a_profile_stored_before_the_sample_still_gives_psi_js_and_chi2() -> None:
    reference, current = frames(15, 2000, 2000)
    stored = build_profile("churn", reference, list(reference.columns)).model_dump(mode="json")
    for feature in stored["features"]:
        del feature["sample"], feature["sample_rows"]
    old = ReferenceProfile.model_validate(stored)

    window = feed(old, current)
    got = {f.feature: f for f in drift_report(old, window, POLICY).features}

    assert window.samples == {}  # nothing to compare a sample with: none is kept
    assert got["tenure"].psi > 0
    assert got["tenure"].jensen_shannon is not None
    assert (got["tenure"].ks_statistic, got["tenure"].wasserstein) == (None, None)
    assert got["plan"].chi2_pvalue is not None
    assert got["plan"].pvalue_adjusted == got["plan"].chi2_pvalue  # the only test: m = 1


def _report(reference: dict[str, list[Any]], current: list[dict[str, Any]]) -> DriftReport:
    frame = pd.DataFrame(reference)
    profile = build_profile("m", frame, list(frame.columns))
    return drift_report(profile, add_batch(Window(), profile, current, T0), POLICY)


def test_constant_columns_do_not_crash() -> None:
    report = _report({"x": [5.0] * 100}, [{"x": 5.0}] * 30 + [{"x": 6.0}] * 10)

    [f] = report.features
    assert f.ks_statistic == pytest.approx(0.25)
    assert f.wasserstein is not None
    assert math.isfinite(f.wasserstein)  # a constant reference: the pooled spread


def test_one_category_and_unseen_categories_do_not_crash() -> None:
    one = _report({"c": ["a"] * 50}, [{"c": "a"}] * 20)
    unseen = _report({"c": ["a"] * 50}, [{"c": "b"}] * 10 + [{"c": "z"}] * 10)

    assert (one.features[0].chi2_statistic, one.features[0].chi2_pvalue) == (0.0, 1.0)
    assert unseen.features[0].chi2_pvalue == pytest.approx(0.0, abs=1e-9)
    assert unseen.features[0].jensen_shannon == pytest.approx(1.0)


def test_missing_values_are_counted_and_left_out_of_the_sample() -> None:
    current: list[dict[str, Any]] = [
        {"x": float("nan"), "c": None},
        {"x": None, "c": float("nan")},
        {"c": "a"},
        {"x": "n/a", "c": "b"},
        {"x": float("inf"), "c": "a"},
        {"x": 2.0, "c": "b"},
    ]

    report = _report({"x": [1.0, 2.0, 3.0, None], "c": ["a", "b", None, "a"]}, current)

    x, c = report.features
    assert x.missing == 4
    assert x.ks_statistic is not None
    assert c.missing == 2
    assert c.chi2_pvalue is not None


def test_a_window_with_no_numbers_has_no_sample_figures() -> None:
    report = _report({"x": [1.0, 2.0, 3.0]}, [{"x": None}, {"x": float("nan")}])

    [x] = report.features
    assert x.psi == 0.0
    assert (x.ks_statistic, x.wasserstein, x.jensen_shannon) == (None, None, None)


def test_a_summarised_reference_counts_its_true_rows_in_the_pvalue() -> None:
    reference, current = frames(16, 50_000, 1500)
    profile = build_profile("churn", reference, list(reference.columns))

    got = live(profile, current)["charges"]

    assert profile.features[1].sample_rows == 50_000
    en = round(50_000 * 1500 / 51_500)
    assert got.ks_statistic is not None
    assert got.ks_pvalue == pytest.approx(stats.kstwo.sf(got.ks_statistic, en), rel=1e-12)
    # the quantile sample moves the statistic by at most 1/2000 (plus ties)
    full = stats.ks_2samp(reference["charges"], current["charges"]).statistic
    assert got.ks_statistic == pytest.approx(full, abs=1e-3)
