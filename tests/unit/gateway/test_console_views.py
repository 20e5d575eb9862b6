"""What the console's pages are built from: timeline rows, lineage, the per-feature charts
(drawn by the chart code the offline drift report uses) and the metric against its floor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from driftloop.gateway.console import views
from driftloop.shared.charts import CURRENT_COLOUR, REFERENCE_COLOUR, histogram_svg, series_svg
from driftloop.shared.eventlog import Received

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(seq: int, kind: str, **data: Any) -> Received:
    at = (T0 + timedelta(minutes=seq)).isoformat()
    return Received({"type": kind, "time": at, "data": {"model": "churn", **data}}, {}, seq)


def test_a_row_says_what_happened_with_its_figures_and_tone() -> None:
    failed = event(
        3,
        "EvaluationFailed",
        cycle_id="abcdef123456",
        version="2",
        reason="accuracy 0.61 < champion 0.70",
        challenger_score=0.61,
    )

    row = views.row(failed)

    assert (row.sequence, row.type, row.cycle, row.tone) == (
        3,
        "EvaluationFailed",
        "abcdef12",
        "bad",
    )
    assert row.summary == "version 2: accuracy 0.61 < champion 0.70"
    assert row.figures["challenger_score"] == 0.61
    assert "cycle_id" not in row.figures


def test_lineage_follows_each_version_to_its_outcome_newest_first() -> None:
    events = [
        event(
            1,
            "ModelTrained",
            cycle_id="c1",
            version="1",
            run_id="r1",
            dataset_version="d1",
            metrics={"accuracy": 0.7},
            trigger="bootstrap",
        ),
        event(2, "EvaluationPassed", cycle_id="c1", version="1"),
        event(3, "Deployed", cycle_id="c1", version="1"),
        event(
            4,
            "ModelTrained",
            cycle_id="c2",
            version="2",
            run_id="r2",
            dataset_version="d2",
            metrics={"accuracy": 0.8},
            trigger="drift",
        ),
        event(5, "EvaluationPassed", cycle_id="c2", version="2"),
        event(6, "RolloutAdvanced", cycle_id="c2", version="2", stage="canary", weight=10),
        event(7, "RolledBack", cycle_id="c2", version="2"),
    ]

    found = views.lineage(events)

    assert [(v.version, v.trigger, v.verdict, v.outcome) for v in found] == [
        ("2", "drift", "passed", "rolled back"),
        ("1", "bootstrap", "passed", "champion"),
    ]


def test_a_feature_chart_sets_the_window_against_the_reference_bins() -> None:
    profile = {
        "features": [
            {
                "name": "tenure",
                "kind": "numeric",
                "edges": [10.0, 20.0],
                "proportions": [0.3, 0.4, 0.3],
            },
            {
                "name": "plan",
                "kind": "categorical",
                "categories": ["basic", "pro"],
                "proportions": [0.5, 0.4, 0.1],
            },
        ]
    }
    figures = {"tenure": {"kind": "numeric", "psi": 0.4, "drifted": True}, "plan": {"psi": 0.0}}

    charts = views.feature_charts(figures, profile, {"tenure": [0, 1, 3], "plan": [2, 2, 0]})

    assert [(c.name, c.drifted) for c in charts] == [("tenure", True), ("plan", False)]
    assert "75.00%" in charts[0].svg  # 3 of the window's 4 rows in the top bin
    assert ">basic<" in charts[1].svg
    assert ">(other)<" in charts[1].svg
    assert charts[0].svg.count(f'fill="{REFERENCE_COLOUR}"') == 3
    assert charts[0].svg.count(f'fill="{CURRENT_COLOUR}"') == 3


def test_a_feature_without_a_profile_says_so() -> None:
    charts = views.feature_charts({"x": {"psi": 0.1}}, None, {})

    assert "no reference profile" in charts[0].svg


def test_a_histogram_has_two_bars_per_bin() -> None:
    svg = histogram_svg(["a", "b"], [0.5, 0.5], [0.9, 0.1], numeric=False)

    assert svg.count("<rect") == 4
    assert "90.0% of rows" in svg


def test_the_metric_chart_draws_the_floor_and_a_point_per_figure() -> None:
    points = [(T0, 0.8), (T0 + timedelta(hours=1), 0.6)]

    svg = series_svg(points, floor=0.7, label="accuracy")

    assert svg.count("<circle") == 2
    assert "floor 0.7" in svg
    assert series_svg([], floor=0.7).startswith('<p class="note">')
