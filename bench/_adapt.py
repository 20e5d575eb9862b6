"""The adaptation benchmark's data and arithmetic (bench/adapt.py, issue 15).

Everything here is pure (pandas/numpy in, figures out) apart from `read_source`, which reads
the dataset files out of the nannyml wheel bench/adapt.py downloaded; tests/unit/
test_bench_adapt.py covers the scoring. No driftloop service is involved here.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

NANNYML = "nannyml==0.13.1"
DATA_DIR = "nannyml/datasets/data/"
# What nannyml ships beside the features: row ids, times, the period, its own model's outputs.
NOT_FEATURES = frozenset(
    {"id", "identifier", "timestamp", "period", "partition", "year", "prediction"}
)
NOT_FEATURE_PREFIXES = ("y_pred", "predicted_")
Z95 = 1.959963984540054


# Data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One of nannyml's datasets: reference file, analysis file (time-ordered) and the
    analysis period's targets, joined on `id`."""

    name: str
    reference: str
    analysis: str
    targets: str
    target: str
    task: str  # classification | regression
    onset: str  # how the drift onset in the analysis period is placed (see onset_index)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "synthetic_sample",
            "synthetic_sample_reference.csv",
            "synthetic_sample_analysis.csv",
            "synthetic_sample_analysis_gt.csv",
            "work_home_actual",
            "classification",
            "half",
        ),
        Source(
            "mc",
            "mc_reference.csv",
            "mc_analysis.csv",
            "mc_analysis_gt.csv",
            "y_true",
            "classification",
            "half",
        ),
        Source(
            "regression_synthetic",
            "regression_synthetic_reference.csv",
            "regression_synthetic_analysis.csv",
            "regression_synthetic_analysis_targets.csv",
            "y_true",
            "regression",
            "half",
        ),
        Source(
            "employment_MA",
            "employment_MA_reference.pq",
            "employment_MA_analysis.pq",
            "employment_MA_analysis_target.pq",
            "employed",
            "classification",
            "year:2017",
        ),
    )
}


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    poison: float = 0.0  # share of post-onset labels flipped before they are posted
    thin: bool = False  # spread `rows` over the whole analysis period (every k-th row)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("synthetic_sample", "synthetic_sample"),
        Scenario("mc", "mc"),
        Scenario("regression_synthetic", "regression_synthetic"),
        Scenario("employment_MA", "employment_MA", thin=True),
        Scenario("synthetic_sample_poisoned", "synthetic_sample", poison=0.4),
    )
}


def read_member(wheel: Path, name: str) -> pd.DataFrame:
    with zipfile.ZipFile(wheel) as z:
        raw = io.BytesIO(z.read(DATA_DIR + name))
    return pd.read_parquet(raw) if name.endswith((".pq", ".parquet")) else pd.read_csv(raw)


def read_source(wheel: Path, source: Source) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, analysis with its targets), the analysis in time order."""
    reference = read_member(wheel, source.reference)
    analysis = read_member(wheel, source.analysis)
    targets = read_member(wheel, source.targets)[["id", source.target]]
    analysis = analysis.drop(columns=[source.target], errors="ignore").merge(
        targets, on="id", how="inner", validate="one_to_one"
    )
    order = ["timestamp", "id"] if "timestamp" in analysis else ["year", "id"]
    order = [c for c in order if c in analysis]
    analysis = analysis.sort_values(order, kind="stable").reset_index(drop=True)
    return reference, analysis


def feature_columns(frame: pd.DataFrame, target: str) -> list[str]:
    """Every column but the target, ids, times, the period and nannyml's own predictions."""
    return [
        c
        for c in frame.columns
        if c != target and c not in NOT_FEATURES and not c.startswith(NOT_FEATURE_PREFIXES)
    ]


def categorical(frame: pd.DataFrame, features: list[str]) -> list[str]:
    """Columns one-hot encoded by the recipe: strings, categories and booleans."""
    return [
        c
        for c in features
        if pd.api.types.is_bool_dtype(frame[c]) or not pd.api.types.is_numeric_dtype(frame[c])
    ]


def clean(frame: pd.DataFrame, features: list[str], target: str, task: str) -> pd.DataFrame:
    """Features and target as a user would send them: categories and strings as str,
    booleans as bool, numbers as float; the target int/str (classification) or float."""
    out = pd.DataFrame(index=frame.index)
    for c in features:
        col = frame[c]
        if pd.api.types.is_bool_dtype(col):
            out[c] = col.astype(bool)
        elif pd.api.types.is_numeric_dtype(col):
            out[c] = col.astype(float)
        else:
            out[c] = col.astype(str).astype(object)
    y = frame[target]
    if task == "regression":
        out[target] = y.astype(float)
    elif pd.api.types.is_numeric_dtype(y):
        out[target] = y.astype(int)
    else:
        out[target] = y.astype(str).astype(object)
    return out


def onset_index(source: Source, analysis: pd.DataFrame) -> int:
    """Row of the (time-ordered) analysis period where the drift begins: its second half for
    nannyml's synthetic sets (drift from chunk 5 of 10 in nannyml's documentation, visible as
    the static model's drop), the first row of `year:Y` for census rows over years."""
    if source.onset == "half":
        return len(analysis) // 2
    if source.onset.startswith("year:"):
        year = int(source.onset.split(":", 1)[1])
        at = np.flatnonzero(analysis["year"].to_numpy() >= year)
        if not len(at):
            raise ValueError(f"{source.name}: no row of year {year}")
        return int(at[0])
    raise ValueError(f"{source.name}: unknown onset rule {source.onset!r}")


def select_rows(
    n: int, onset: int, *, rows: int | None, pre_rows: int, thin: bool, batch: int = 1
) -> tuple[np.ndarray, int]:
    """Which analysis rows to replay, in order, and where the onset falls among them.

    Default: the `pre_rows` rows just before the onset (rounded down to whole batches, so the
    onset row starts a batch) and the rows after it, up to `rows` in all. `thin`: every k-th
    row of the whole period (k = ceil(n / rows)), so the replay spans all of it."""
    if not 0 <= onset <= n:
        raise ValueError(f"onset {onset} outside 0..{n}")
    if thin:
        step = max(1, math.ceil(n / rows)) if rows else 1
        picked = np.arange(0, n, step)
        return picked, int(np.searchsorted(picked, onset))
    pre = min(pre_rows, onset)
    pre -= pre % max(1, batch)
    start = onset - pre
    stop = n if rows is None else min(n, start + max(rows, pre))
    return np.arange(start, stop), pre


def flip_labels(
    labels: np.ndarray, onset: int, share: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`share` of the labels from `onset` on, chosen at random, replaced by another class
    (chosen at random among the others when there are more than two). Returns (labels as
    posted, mask of the flipped rows)."""
    posted = labels.copy()
    flipped = np.zeros(len(labels), dtype=bool)
    after = np.arange(onset, len(labels))
    k = round(share * len(after))
    if k == 0:
        return posted, flipped
    chosen = rng.choice(after, size=k, replace=False)
    classes = sorted(set(labels.tolist()), key=str)
    if len(classes) < 2:
        raise ValueError("flipping labels needs at least two classes")
    for i in chosen:
        others = [c for c in classes if c != labels[i]]
        posted[i] = others[0] if len(others) == 1 else others[int(rng.integers(len(others)))]
    flipped[chosen] = True
    return posted, flipped


def oracle_split(post_rows: int, *, labels: int = 5000) -> int:
    """How many post-onset rows the oracle learns from: `labels`, at most a third of them."""
    return max(0, min(labels, post_rows // 3))


# Scoring -------------------------------------------------------------------------------------


def same(task: str, a: Any, b: Any) -> bool:
    """Prediction equals label (classification), with 1 and 1.0 and "1" the same class."""

    def norm(v: Any) -> str:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, np.generic):
            v = v.item()
            if isinstance(v, float) and v.is_integer():
                v = int(v)
        return str(v)

    return norm(a) == norm(b)


def losses(task: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-row loss: 0/1 error (classification) or squared error (regression)."""
    if task == "regression":
        diff: np.ndarray = np.asarray(pred, dtype=float) - np.asarray(y, dtype=float)
        return diff**2
    return np.array([0.0 if same(task, p, t) else 1.0 for p, t in zip(pred, y, strict=True)])


def metric(task: str, y: np.ndarray, pred: np.ndarray) -> float:
    """Accuracy (classification) or RMSE (regression); NaN on no rows."""
    if len(y) == 0:
        return float("nan")
    loss = losses(task, y, pred)
    return float(math.sqrt(loss.mean())) if task == "regression" else float(1.0 - loss.mean())


def metric_name(task: str) -> str:
    return "rmse" if task == "regression" else "accuracy"


def better(task: str, a: float, b: float) -> float:
    """How much better `a` is than `b` (positive: better), whichever way the metric points."""
    return b - a if task == "regression" else a - b


def gap_recovered(task: str, served: float, static: float, oracle: float) -> float | None:
    """Share of the static->oracle gap the served answers closed, on the same rows:
    (served - static) / (oracle - static) for accuracy, (static - served) / (static - oracle)
    for RMSE. 1 = as good as the oracle, 0 = no better than static, negative = worse than
    static. None when the oracle is not better than static (no gap to recover)."""
    gap = better(task, oracle, static)
    if not all(map(math.isfinite, (served, static, oracle))) or gap <= 0:
        return None
    return better(task, served, static) / gap


def paired_difference(
    task: str, y: np.ndarray, pred: np.ndarray, base: np.ndarray
) -> dict[str, Any]:
    """`pred` against `base` on the same rows: the mean per-row loss difference (base - pred:
    positive when `pred` is better), its standard error, and whether `pred` is worse at 95 %
    (upper bound of the difference below 0)."""
    d = losses(task, y, base) - losses(task, y, pred)
    n = len(d)
    if n == 0:
        return {"rows": 0, "diff": None, "se": None, "worse": False}
    mean = float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    return {"rows": n, "diff": mean, "se": se, "worse": bool(mean + Z95 * se < 0)}


def first_adapted_row(
    versions: list[str | None], routes: list[str | None], onset: int
) -> int | None:
    """Index (in the replay) of the first row from the onset on answered by the champion
    route with a version newer than the one serving at the onset; None when none was."""
    base = next((v for v in versions[onset:] if v is not None), None)
    if base is None:
        base = next((v for v in reversed(versions[:onset]) if v is not None), None)
    for i in range(onset, len(versions)):
        v = versions[i]
        if v is not None and routes[i] == "champion" and _newer(v, base):
            return i
    return None


def _newer(v: str, base: str | None) -> bool:
    if base is None:
        return True
    try:
        return int(v) > int(base)
    except ValueError:
        return v != base


def first_new_version_row(
    versions: list[str | None], routes: list[str | None], onset: int
) -> int | None:
    """Index of the first row from the onset on answered (champion or canary route) by a
    version newer than the one serving at the onset: when users first met an adapted model."""
    base = next((v for v in versions[onset:] if v is not None), None)
    for i in range(onset, len(versions)):
        v = versions[i]
        if v is not None and routes[i] in ("champion", "canary") and _newer(v, base):
            return i
    return None


def row_at(sent: list[tuple[datetime, int]], at: datetime) -> int | None:
    """Rows sent by `at`, from the replay's (send time, rows sent once that batch was
    answered) pairs in order; None before the first batch."""
    rows = None
    for when, done in sent:
        if when > at:
            break
        rows = done
    return rows


STAGE_KEYS = ("stage", "weight", "version", "trigger")


def cycle_timelines(
    envelopes: list[dict[str, Any]], sent: list[tuple[datetime, int]], onset: int
) -> dict[str, list[dict[str, Any]]]:
    """For each retraining cycle (not the bootstrap), its events with the replay row each came
    at, counted from the onset (negative: before it; None: before the replay began); also
    DriftDetected and PerformanceDegraded under "-" (they belong to no cycle)."""
    bootstrap = {
        str(data_of(e).get("cycle_id"))
        for e in envelopes
        if e.get("type") == "RetrainRequested" and data_of(e).get("trigger") == "bootstrap"
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for env in envelopes:
        data = data_of(env)
        cycle = str(data["cycle_id"]) if data.get("cycle_id") is not None else "-"
        if cycle in bootstrap or (cycle == "-" and env.get("type") == "DeadLetter"):
            continue
        row = row_at(sent, event_time(env))
        entry = {
            "type": env.get("type"),
            "row": None if row is None else row - onset,
            **{k: data[k] for k in STAGE_KEYS if data.get(k) is not None},
        }
        out.setdefault(cycle, []).append(entry)
    return out


def served_versions(versions: list[str | None], routes: list[str | None]) -> dict[str, int]:
    """Rows answered per "version/route"; unanswered rows under "-"."""
    counts = Counter(
        f"{v}/{r}" if v is not None else "-" for v, r in zip(versions, routes, strict=True)
    )
    return dict(sorted(counts.items()))


# Events --------------------------------------------------------------------------------------


def event_time(envelope: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(envelope.get("time")).replace("Z", "+00:00"))


def data_of(envelope: dict[str, Any]) -> dict[str, Any]:
    data = envelope.get("data")
    return data if isinstance(data, dict) else {}


def retrains(envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RetrainRequested events other than the bootstrap: (time, trigger, cycle)."""
    out = []
    for env in envelopes:
        data = data_of(env)
        if env.get("type") != "RetrainRequested" or data.get("trigger") == "bootstrap":
            continue
        out.append(
            {
                "time": event_time(env),
                "trigger": data.get("trigger"),
                "cycle_id": str(data.get("cycle_id")),
                "reason": data.get("reason"),
            }
        )
    return out


def retrains_before(envelopes: list[dict[str, Any]], onset_at: datetime | None) -> int:
    """RetrainRequested (not the bootstrap) published before the onset row was sent."""
    if onset_at is None:
        return len(retrains(envelopes))
    return sum(1 for r in retrains(envelopes) if r["time"] < onset_at)


TERMINAL = ("Deployed", "RolledBack", "EvaluationFailed", "DataRejected", "TrainingFailed")


def cycle_outcomes(envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each retraining cycle (not the bootstrap), in order: trigger, how it ended (or
    "running"), the version it made, and why it failed (reason, failed checks)."""
    cycles: dict[str, dict[str, Any]] = {}
    for env in envelopes:
        data = data_of(env)
        cycle = data.get("cycle_id")
        kind = env.get("type")
        if cycle is None:
            continue
        cycle = str(cycle)
        if kind == "RetrainRequested":
            if data.get("trigger") == "bootstrap":
                continue
            cycles[cycle] = {
                "cycle_id": cycle,
                "trigger": data.get("trigger"),
                "requested": str(env.get("time")),
                "ended": "running",
                "version": None,
                "why": None,
            }
            continue
        entry = cycles.get(cycle)
        if entry is None:
            continue
        if data.get("version") is not None and kind in ("ModelTrained", "Deployed"):
            entry["version"] = str(data["version"])
        if kind in TERMINAL:
            entry["ended"] = kind
            entry["ended_at"] = str(env.get("time"))
            if kind != "Deployed":
                entry["why"] = _why(data)
    return list(cycles.values())


def _why(data: dict[str, Any]) -> str:
    parts = []
    if data.get("reason"):
        parts.append(str(data["reason"]))
    for check in data.get("checks") or []:
        if isinstance(check, dict) and check.get("passed") is False:
            parts.append(str(check.get("detail") or check.get("name") or check))
    failed = data.get("failed_check") or data.get("check")
    if failed:
        parts.append(str(failed))
    return "; ".join(parts)[:400] or "-"


def event_counts(envelopes: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(str(e.get("type")) for e in envelopes))


# Goals ---------------------------------------------------------------------------------------

GAP_GOAL = {"synthetic_sample": 0.5, "mc": 0.5}


def goals(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) for one scenario's result (issue 15's goals)."""
    task = result["task"]
    name = result["scenario"]
    after = result["after_onset"]
    out: list[tuple[str, str, bool]] = []
    served, static = after["served"], after["static"]
    ok = math.isfinite(served) and math.isfinite(static) and better(task, served, static) >= 0
    out.append(
        (
            "served >= static after onset",
            f"{served:.4f} vs {static:.4f} ({metric_name(task)}, {after['rows']} rows)",
            ok,
        )
    )
    if name in GAP_GOAL:
        gap = result["rest"]["gap_recovered"]
        want = GAP_GOAL[name]
        out.append(
            (
                f">= {want:.0%} of the static->oracle gap",
                "n/a (no gap)" if gap is None else f"{gap:.2f}",
                gap is not None and gap >= want,
            )
        )
    before = result["retrains_before_onset"]
    out.append(("0 retrains before the onset", str(before), before == 0))
    if result.get("poison"):
        worse = [v for v, f in result["versions"].items() if f.get("worse_than_static")]
        out.append(
            (
                "never serves a version worse than static",
                "worse: " + ", ".join(worse) if worse else "none worse",
                not worse,
            )
        )
    return out
