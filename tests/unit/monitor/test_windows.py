"""When a drift window closes: by rows, or by time with a floor of rows; and the fast binning
gives what the reference profile's binning gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftloop.monitor.domain.drift import Window, add_batch, window_due
from driftloop.shared.profile import ReferenceProfile, bin_counts, build_profile
from driftloop.shared.spec import MonitorSpec, SpecError, parse_spec

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BY_ROWS = MonitorSpec(window=1000)
BY_TIME = MonitorSpec(window=1000, window_time=timedelta(minutes=10), window_min_rows=100)


def window(rows: int, *, start: datetime | None = T0) -> Window:
    return Window(rows=rows, start=start if rows else None, end=start if rows else None)


@pytest.mark.parametrize(
    ("spec", "open_window", "at", "due"),
    [
        (BY_ROWS, window(999), T0 + timedelta(days=30), False),
        (BY_ROWS, window(1000), T0, True),
        (BY_TIME, window(1000), T0, True),
        (BY_TIME, window(500), T0 + timedelta(minutes=9, seconds=59), False),
        (BY_TIME, window(500), T0 + timedelta(minutes=10), True),
        (BY_TIME, window(99), T0 + timedelta(hours=5), False),
        (BY_TIME, window(100), T0 + timedelta(hours=5), True),
        (BY_TIME, window(0, start=None), T0 + timedelta(hours=5), False),
    ],
    ids=[
        "rows-only-never-by-time",
        "rows-full",
        "rows-full-before-time",
        "time-not-yet",
        "time-passed",
        "time-passed-too-few-rows-stays-open",
        "time-passed-at-min-rows",
        "empty-window",
    ],
)
def test_window_closes_by_rows_or_by_time_with_enough_rows(
    spec: MonitorSpec, open_window: Window, at: datetime, due: bool
) -> None:
    assert window_due(open_window, spec, at=at) is due


def test_spec_reads_window_time_and_retention() -> None:
    spec = parse_spec(
        "model: m\ntarget: y\nmonitor:\n  window_time: 15m\n  window_min_rows: 50\n"
        "  keep_samples: 5000\n  keep_samples_for: 2d\n"
    )

    assert spec.monitor.window_time == timedelta(minutes=15)
    assert spec.monitor.window_min_rows == 50
    assert spec.monitor.keep_samples == 5000
    assert spec.monitor.keep_samples_for == timedelta(days=2)
    assert parse_spec(spec.to_json()) == spec  # read back from the KV bucket's JSON


def test_spec_defaults_close_windows_by_rows_only_and_bound_the_samples() -> None:
    spec = parse_spec("model: m\ntarget: y\n")

    assert spec.monitor.window_time is None
    assert spec.monitor.keep_samples == 1_000_000
    assert spec.monitor.keep_samples_for == timedelta(days=7)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("window_time: 0s", "monitor.window_time"),
        ("window_time: soon", "monitor.window_time"),
        ("window_min_rows: 0", "monitor.window_min_rows"),
        ("keep_samples: 10", "monitor.keep_samples"),
        ("keep_samples_for: 0s", "monitor.keep_samples_for"),
    ],
    ids=["zero-window-time", "not-a-duration", "no-min-rows", "too-few-samples", "zero-age"],
)
def test_spec_refuses_bad_window_and_retention_naming_the_field(line: str, field: str) -> None:
    with pytest.raises(SpecError, match=field):
        parse_spec(f"model: m\ntarget: y\nmonitor:\n  {line}\n")


def _profile() -> ReferenceProfile:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "x": rng.normal(50, 10, 2000),
            "n": rng.integers(0, 20, 2000),
            "plan": rng.choice(["basic", "pro", "max"], 2000),
        }
    )
    return build_profile("m", frame, ["x", "n", "plan"])


@pytest.mark.parametrize(
    "values",
    [
        {"x": [1.5, 80.0, 50, -3, float("nan")], "n": [0, 3, 19, 40, 7], "plan": list("abcde")},
        {"x": [], "n": [], "plan": []},
        {"x": [1.0, None, "7", True], "n": [1, 2, 3, 4], "plan": ["pro", None, 3, "basic"]},
        {"x": [12.0] * 4, "n": [5] * 4, "plan": ["max", "max", "unknown", "basic"]},
    ],
    ids=["plain-numbers-and-strings", "empty", "mixed-types-general-path", "repeats-and-other"],
)
def test_window_counts_equal_the_profiles_binning(values: dict[str, list[Any]]) -> None:
    profile = _profile()
    rows = len(values["x"])
    instances = [{name: values[name][i] for name in values} for i in range(rows)]

    got = add_batch(Window(), profile, instances, T0)

    for fp in profile.features:
        counts, missing = bin_counts(fp, values[fp.name])
        assert got.counts[fp.name] == counts.tolist(), fp.name
        assert got.missing[fp.name] == missing, fp.name
