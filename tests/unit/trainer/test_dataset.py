"""Assembling the training set (recent rows first, filled from the reference) and checking it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from driftloop.shared.events import CheckResult
from driftloop.shared.spec import ModelSpec, TrainerSpec
from driftloop.trainer.domain.dataset import assemble, recent_since, validate

SPEC = ModelSpec(
    model="churn",
    target="churned",
    features=["tenure", "plan"],
    trainer=TrainerSpec(max_rows=10, min_rows=3),
)


def rows(n: int, *, source: str, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "tenure": np.arange(n, dtype=float) + (0.0 if source == "recent" else 1000.0),
            "plan": rng.choice(["basic", "pro"], n),
            "churned": np.arange(n) % 2,
            "source": source,
        }
    )


def failed(checks: list[CheckResult]) -> dict[str, tuple[float | None, float | None]]:
    return {c.name: (c.figure, c.threshold) for c in checks if not c.passed}


# assemble ----------------------------------------------------------------------------------


def test_recent_rows_come_first_and_the_reference_fills_up_to_max_rows() -> None:
    recent, reference = rows(4, source="recent"), rows(20, source="reference")

    ts = assemble(recent, reference, SPEC)

    assert len(ts.frame) == 10
    assert ts.frame["tenure"].tolist()[:4] == [0.0, 1.0, 2.0, 3.0]
    assert ts.frame["tenure"].tolist()[4:] == [1000.0 + i for i in range(6)]
    assert (ts.recent_rows, ts.reference_rows) == (4, 6)


def test_older_rows_fill_before_the_reference_and_are_counted_apart() -> None:
    recent = rows(3, source="recent")
    older = rows(4, source="older").assign(tenure=lambda f: f["tenure"] + 500.0)
    reference = rows(20, source="reference")

    ts = assemble(recent, reference, SPEC, older=older)

    assert ts.frame["tenure"].tolist()[:3] == [0.0, 1.0, 2.0]
    assert ts.frame["tenure"].tolist()[3:7] == [1500.0 + i for i in range(4)]
    assert ts.frame["tenure"].tolist()[7:] == [1000.0 + i for i in range(3)]
    assert (ts.recent_rows, ts.older_rows, ts.reference_rows) == (3, 4, 3)


def test_older_rows_past_the_room_left_are_cut_and_nothing_else_is_filled() -> None:
    recent, older = rows(6, source="recent"), rows(8, source="older")

    ts = assemble(recent, rows(5, source="reference"), SPEC, older=older)

    assert (ts.recent_rows, ts.older_rows, ts.reference_rows) == (6, 4, 0)


def test_no_older_rows_leave_the_assembly_as_without_an_onset() -> None:
    recent, reference = rows(4, source="recent"), rows(20, source="reference")

    with_onset = assemble(recent, reference, SPEC, older=recent.iloc[0:0])

    assert with_onset.version == assemble(recent, reference, SPEC).version
    assert (with_onset.older_rows, with_onset.reference_rows) == (0, 6)


def test_recent_rows_past_max_rows_are_cut_and_nothing_is_filled() -> None:
    recent, reference = rows(15, source="recent"), rows(20, source="reference")

    ts = assemble(recent, reference, SPEC)

    assert ts.frame["tenure"].tolist() == [float(i) for i in range(10)]
    assert (ts.recent_rows, ts.reference_rows) == (10, 0)


def test_without_a_reference_the_set_is_the_recent_rows() -> None:
    ts = assemble(rows(6, source="recent"), None, SPEC)

    assert len(ts.frame) == 6
    assert (ts.recent_rows, ts.reference_rows) == (6, 0)


def test_the_set_has_the_spec_features_and_target_only() -> None:
    ts = assemble(rows(4, source="recent"), rows(4, source="reference"), SPEC)

    assert ts.features == ["tenure", "plan"]
    assert list(ts.frame.columns) == ["tenure", "plan", "churned"]


def test_features_default_to_every_column_but_the_target() -> None:
    spec = SPEC.model_copy(update={"features": None})

    ts = assemble(rows(4, source="recent"), None, spec)

    assert ts.features == ["tenure", "plan", "source"]


def test_content_hash_is_stable_for_the_same_rows() -> None:
    first = assemble(rows(4, source="recent"), rows(20, source="reference"), SPEC)
    again = assemble(rows(4, source="recent"), rows(20, source="reference"), SPEC)

    assert first.version == again.version
    assert len(first.version) == 16


@pytest.mark.parametrize(
    ("column", "index", "value"),
    [("tenure", 0, 0.5), ("plan", 2, "max"), ("churned", 3, 7)],
    ids=["numeric-feature", "categorical-feature", "label"],
)
def test_content_hash_changes_when_a_row_changes(column: str, index: int, value: object) -> None:
    recent = rows(4, source="recent")
    changed = recent.copy()
    changed[column] = changed[column].astype(object)
    changed.loc[index, column] = value

    before = assemble(recent, rows(20, source="reference"), SPEC)
    after = assemble(changed, rows(20, source="reference"), SPEC)

    assert before.version != after.version


def test_content_hash_changes_when_a_filled_row_changes() -> None:
    reference = rows(20, source="reference")
    changed = reference.copy()
    changed.loc[5, "tenure"] = -1.0

    before = assemble(rows(4, source="recent"), reference, SPEC)
    after = assemble(rows(4, source="recent"), changed, SPEC)

    assert before.version != after.version


# de-duplication ----------------------------------------------------------------------------


def with_spec(**trainer: object) -> ModelSpec:
    return SPEC.model_copy(update={"trainer": SPEC.trainer.model_copy(update=trainer)})


def test_a_recent_row_repeating_a_newer_one_is_dropped_and_counted() -> None:
    recent = rows(6, source="recent")
    replayed = pd.concat([recent, recent.iloc[[0, 2]]], ignore_index=True)

    ts = assemble(replayed, rows(20, source="reference"), SPEC)

    assert ts.frame["tenure"].tolist()[:6] == [float(i) for i in range(6)]
    assert (ts.recent_rows, ts.recent_duplicates) == (6, 2)
    assert (ts.reference_rows, ts.reference_duplicates) == (4, 0)


def test_a_reference_row_repeating_a_recent_row_is_skipped_and_the_fill_goes_on() -> None:
    recent = rows(4, source="recent")
    reference = pd.concat([recent.iloc[[1]], rows(20, source="reference")], ignore_index=True)

    ts = assemble(recent, reference, SPEC)

    assert ts.frame["tenure"].tolist()[4:] == [1000.0 + i for i in range(6)]
    assert (ts.recent_rows, ts.reference_rows) == (4, 6)
    assert (ts.recent_duplicates, ts.reference_duplicates) == (0, 1)


def test_rows_that_differ_only_in_the_label_are_both_kept() -> None:
    recent = rows(4, source="recent")
    conflicting = pd.concat([recent, recent.iloc[[0]].assign(churned=1)], ignore_index=True)

    ts = assemble(conflicting, None, SPEC)

    assert (ts.recent_rows, ts.recent_duplicates) == (5, 0)


def test_repeats_are_kept_when_deduplicate_is_off() -> None:
    recent = rows(6, source="recent")
    replayed = pd.concat([recent, recent.iloc[[0, 2]]], ignore_index=True)
    spec = with_spec(deduplicate=False)

    ts = assemble(replayed, None, spec)

    assert (ts.recent_rows, ts.recent_duplicates) == (8, 0)


def test_the_duplicates_check_sees_the_recent_rows_as_received() -> None:
    recent = rows(6, source="recent")
    replayed = pd.concat([recent, *[recent.iloc[[0]]] * 4], ignore_index=True)

    ts = assemble(replayed, None, SPEC)
    checks = validate(ts, SPEC, reference=rows(6, source="reference"))
    [duplicates] = [c for c in checks if c.name == "duplicates"]

    assert ts.recent_rows == 6
    assert not duplicates.passed
    assert duplicates.detail.startswith("4 of 10 recent rows")


def test_a_first_versions_file_reports_its_duplicates_without_judging_them() -> None:
    recent = rows(6, source="recent")
    repeating = pd.concat([recent, *[recent.iloc[[0]]] * 4], ignore_index=True)

    ts = assemble(repeating, None, SPEC)
    [duplicates] = [c for c in validate(ts, SPEC) if c.name == "duplicates"]

    assert duplicates.passed
    assert duplicates.figure == 0.4
    assert duplicates.threshold is None
    assert "no reference to compare with" in duplicates.detail


# the time window ---------------------------------------------------------------------------

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cut", "window", "since"),
    [
        (None, None, None),
        (NOW - timedelta(days=3), None, NOW - timedelta(days=3)),
        (None, timedelta(days=1), NOW - timedelta(days=1)),
        (NOW - timedelta(days=3), timedelta(days=1), NOW - timedelta(days=1)),
        (NOW - timedelta(hours=2), timedelta(days=1), NOW - timedelta(hours=2)),
    ],
    ids=["rows-only", "after-champion", "window", "window-later", "champion-later"],
)
def test_recent_rows_start_at_the_later_of_the_champion_cut_and_the_window(
    cut: datetime | None, window: timedelta | None, since: datetime | None
) -> None:
    assert recent_since(cut, window, now=NOW) == since


# validate ----------------------------------------------------------------------------------


def test_a_sound_set_passes_every_check() -> None:
    ts = assemble(rows(8, source="recent"), None, SPEC)

    checks = validate(ts, SPEC)

    assert {c.name for c in checks} == {
        "columns_present",
        "extra_columns",
        "min_rows",
        "label_classes",
        "duplicates",
        "finite_values",
    }
    assert failed(checks) == {}


def test_a_one_class_label_is_rejected() -> None:
    recent = rows(8, source="recent").assign(churned=1)

    checks = validate(assemble(recent, None, SPEC), SPEC)

    assert failed(checks) == {"label_classes": (1, 2)}


def test_too_few_labelled_rows_are_rejected() -> None:
    recent = rows(4, source="recent")
    recent["churned"] = recent["churned"].astype(float)
    recent.loc[[0, 3], "churned"] = np.nan

    checks = validate(assemble(recent, None, SPEC), SPEC)

    assert failed(checks) == {"min_rows": (2, 3)}


def test_a_missing_column_is_rejected_naming_it() -> None:
    recent = rows(8, source="recent").drop(columns="plan")

    checks = validate(assemble(recent, None, SPEC), SPEC)

    [missing] = [c for c in checks if c.name == "columns_present"]
    assert not missing.passed
    assert missing.figure == 1
    assert "plan" in missing.detail


def test_a_regression_target_must_be_numeric() -> None:
    spec = SPEC.model_copy(update={"task": "regression"})
    numeric = rows(8, source="recent")
    text = numeric.assign(churned=["a", "b"] * 4)

    good = validate(assemble(numeric, None, spec), spec)
    bad = validate(assemble(text, None, spec), spec)

    assert failed(good) == {}
    assert "numeric_target" in failed(bad)
    assert not any(c.name == "label_classes" for c in good)


def test_a_first_versions_file_may_keep_its_repeats_and_every_row() -> None:
    recent = rows(6, source="file")
    repeating = pd.concat([recent, *[recent.iloc[[0]]] * 4], ignore_index=True)

    ts = assemble(repeating, None, with_spec(max_rows=10), max_rows=11, deduplicate=False)

    assert (ts.recent_rows, ts.recent_duplicates) == (10, 0)
