"""What the console's pages show, built from the gateway's model status, the events stream and
the reference profile: plain values for the templates (no I/O here)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from driftloop.shared.charts import histogram_svg, series_svg
from driftloop.shared.eventlog import Received, describe

# Event types shown as trouble (red) and as good news (green) in the timeline.
BAD = frozenset(
    {
        "EvaluationFailed",
        "TrainingFailed",
        "DataRejected",
        "RolledBack",
        "DriftDetected",
        "PerformanceDegraded",
        "AdaptationStalled",
    }
)
GOOD = frozenset({"EvaluationPassed", "Deployed", "Approved"})


@dataclass(frozen=True)
class Row:
    """One event of the timeline."""

    sequence: int
    type: str
    at: str
    cycle: str
    summary: str
    figures: dict[str, Any]
    tone: str


def when(value: Any) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def row(event: Received) -> Row:
    """The timeline's line for an event: its type, time, cycle, what it means and its figures
    (the payload's numbers, reasons and versions; lists and objects left to the summary)."""
    data = event.data
    at = when(event.envelope.get("time"))
    figures = {
        k: v
        for k, v in data.items()
        if k not in ("model", "cycle_id") and isinstance(v, int | float | str) and v != ""
    }
    if isinstance(data.get("metrics"), dict):
        figures |= {k: v for k, v in data["metrics"].items() if isinstance(v, int | float)}
    tone = "bad" if event.type in BAD else "good" if event.type in GOOD else ""
    return Row(
        sequence=event.sequence,
        type=event.type,
        at=at.strftime("%Y-%m-%d %H:%M:%S") if at else str(event.envelope.get("time", "")),
        cycle=str(data.get("cycle_id") or "")[:8],
        summary=describe(event),
        figures=figures,
        tone=tone,
    )


@dataclass
class Lineage:
    """One model version: the cycle that trained it, on what, and what became of it."""

    version: str
    trained_at: str = ""
    trigger: str = ""
    dataset: str = ""
    run_id: str = ""
    cycle: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    verdict: str = ""
    outcome: str = ""


def lineage(events: list[Received]) -> list[Lineage]:
    """Versions trained in `events` (oldest first), newest first."""
    versions: dict[str, Lineage] = {}
    for event in events:
        d = event.data
        version = str(d.get("version") or "")
        if event.type == "ModelTrained" and version:
            at = when(event.envelope.get("time"))
            versions[version] = Lineage(
                version=version,
                trained_at=at.strftime("%Y-%m-%d %H:%M") if at else "",
                trigger=str(d.get("trigger", "")),
                dataset=str(d.get("dataset_version", ""))[:12],
                run_id=str(d.get("run_id", "")),
                cycle=str(d.get("cycle_id", ""))[:8],
                metrics={k: v for k, v in (d.get("metrics") or {}).items() if isinstance(v, float)},
            )
        elif version in versions:
            item = versions[version]
            if event.type in ("EvaluationPassed", "EvaluationFailed"):
                item.verdict = "passed" if event.type == "EvaluationPassed" else "failed"
            elif event.type == "Deployed":
                item.outcome = "champion"
            elif event.type == "RolledBack":
                item.outcome = "rolled back"
            elif event.type == "RolloutAdvanced" and item.outcome not in (
                "champion",
                "rolled back",
            ):
                item.outcome = f"{d.get('stage')} {d.get('weight')}%"
    return sorted(versions.values(), key=lambda v: _number(v.version), reverse=True)


def _number(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def metric_chart(
    events: list[Received],
    last_performance: dict[str, Any] | None,
    history: list[dict[str, Any]] | None = None,
) -> str:
    """The served metric on labelled traffic over time against the floor: the monitor's
    evaluations (`history`, its newest 200), else its degraded windows in the timeline and its
    newest figure."""
    if history:
        dated = [(when(h.get("at")), h) for h in history]
        points = [
            (at, float(h["figure"]))
            for at, h in dated
            if at is not None and isinstance(h.get("figure"), int | float)
        ]
        newest = history[-1]
        floor_value = newest.get("floor")
        return series_svg(
            points,
            floor=float(floor_value) if isinstance(floor_value, int | float) else None,
            label=str(newest.get("metric", "")),
        )
    points = []
    floor: float | None = None
    name = ""
    for event in events:
        if event.type == "PerformanceDegraded":
            at = when(event.data.get("window_end"))
            if at is not None and isinstance(event.data.get("figure"), int | float):
                points.append((at, float(event.data["figure"])))
                floor = float(event.data["threshold"])
                name = str(event.data.get("metric", ""))
    if last_performance and isinstance(last_performance.get("figure"), int | float):
        at = when(last_performance.get("at"))
        if at is not None:
            points.append((at, float(last_performance["figure"])))
            name = name or str(last_performance.get("metric", ""))
            if isinstance(last_performance.get("floor"), int | float):
                floor = float(last_performance["floor"])
    points.sort(key=lambda p: p[0])
    return series_svg(points, floor=floor, label=name)


@dataclass(frozen=True)
class FeatureChart:
    name: str
    kind: str
    psi: float | None
    drifted: bool
    figures: dict[str, Any]
    svg: str


def _bin_labels(profile: dict[str, Any]) -> list[str]:
    if profile.get("kind") == "numeric":
        edges = [float(e) for e in profile.get("edges") or []]
        if not edges:
            return ["all"]
        inner = [f"{a:.3g}-{b:.3g}" for a, b in itertools.pairwise(edges)]
        return [f"<{edges[0]:.3g}", *inner, f"≥{edges[-1]:.3g}"]
    labels = [str(c) for c in profile.get("categories") or []]
    return [*labels, "(other)"]


def feature_charts(
    figures: dict[str, dict[str, Any]],
    profile: dict[str, Any] | None,
    counts: dict[str, list[int]],
) -> list[FeatureChart]:
    """One chart per feature of the last judged window: the reference's share of rows per bin
    (the profile's quantile bins, or categories) against that window's (`counts`: its rows per
    bin, kept by the monitor with the window's figures)."""
    by_name = {f["name"]: f for f in (profile or {}).get("features") or []}
    names = list(figures) or list(by_name)
    charts = []
    for name in names:
        fig = figures.get(name, {})
        fp = by_name.get(name)
        svg = '<p class="note">no reference profile for this feature</p>'
        if fp is not None:
            reference = [float(p) for p in fp.get("proportions") or []]
            labels = _bin_labels(fp)
            if len(labels) != len(reference):
                labels = [str(i + 1) for i in range(len(reference))]
            window = [float(c) for c in counts.get(name) or []]
            total = sum(window)
            current = (
                [c / total for c in window]
                if total and len(window) == len(reference)
                else [0.0] * len(reference)
            )
            svg = histogram_svg(labels, reference, current, numeric=False, height=140)
        charts.append(
            FeatureChart(
                name=name,
                kind=str(fig.get("kind") or (fp or {}).get("kind") or ""),
                psi=fig.get("psi"),
                drifted=bool(fig.get("drifted")),
                figures={
                    k: v
                    for k, v in fig.items()
                    if k in ("ks_pvalue", "chi2_pvalue", "pvalue_adjusted", "jensen_shannon")
                    and v is not None
                },
                svg=svg,
            )
        )
    return charts
