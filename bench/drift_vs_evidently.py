# ruff: noqa: T201  (a benchmark prints its figures)
"""driftloop's drift report vs Evidently's DataDriftPreset on the same data, in one run.

Run it with `make bench-drift` (it makes bench/.venv-evidently: Evidently 0.7 needs pandas < 3,
so it stays out of the project's dependencies), or by hand in that venv:

    bench/.venv-evidently/bin/python bench/drift_vs_evidently.py [--rows 1000000] [--seed 7]

Data: `--rows` reference and `--rows` current rows, 20 numeric + 5 categorical features, drawn
from a seeded generator, with drift in 12 of the 25 (the names say which: `*_drift`).

Timed (wall clock, `time.perf_counter`, one call each unless `--repeat`, best of the repeats):

- driftloop: `drift_report(reference, current, features)`: PSI, KS statistic and p-value,
  Jensen-Shannon, normalised Wasserstein per numeric feature; PSI, chi-square, Jensen-Shannon
  per categorical one; Benjamini-Hochberg across features.
- Evidently, the same statistics: one Report of four DataDriftPresets, each with one stattest
  per column kind (ks + chisquare, psi, jensenshannon, wasserstein on the numeric columns),
  the Dataset wrapping of both frames included.
- Evidently, the default DataDriftPreset (what a user gets without choosing: at this size
  normed Wasserstein for numeric columns, Jensen-Shannon for categorical ones).

Agreement: each Evidently figure against driftloop's on the same column. Where the
definitions are the same (see DEFINITIONS) the goal is a max absolute difference <= 1e-6;
where they differ the difference is printed for information only.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from driftloop.monitor.domain.stats import drift_report

NUMERIC = 20
CATEGORICAL = 5
TOLERANCE = 1e-6

# statistic -> (same definition in Evidently 0.7?, what Evidently computes)
DEFINITIONS: dict[str, tuple[bool, str]] = {
    "ks.pvalue (num)": (
        True,
        "ks: scipy ks_2samp(ref, cur).pvalue, method auto: same as driftloop",
    ),
    "ks.statistic (num)": (
        False,
        "not reported by Evidently (its ks test returns the p-value only)",
    ),
    "wasserstein (num)": (
        True,
        "wasserstein: scipy wasserstein_distance / max(std(ref, ddof=0), 0.001): same on the "
        "columns whose reference std is at least 0.001",
    ),
    "wasserstein (num, std<0.001)": (
        False,
        "Evidently divides by 0.001 when std(ref) < 0.001 (n19 here); driftloop by std(ref)",
    ),
    "jensen_shannon (cat)": (
        True,
        "jensenshannon: scipy jensenshannon of category shares, natural log; compared after "
        "converting to base 2 (d / sqrt(ln 2))",
    ),
    "psi (cat)": (
        True,
        "psi: sum((r - c) ln(r / c)) over category shares; same while no category is empty "
        "in either sample (Evidently then puts 1e-4 or min/1e6 in the empty cell, driftloop "
        "floors at 1e-4 and renormalises)",
    ),
    "chi2.pvalue (cat)": (
        False,
        "chisquare: goodness of fit of current counts to reference shares (reference taken "
        "as known); driftloop: Pearson homogeneity test of the 2 x K table",
    ),
    "jensen_shannon (num)": (
        False,
        "Evidently: Sturges equal-width bins over both samples (about 22 bins at 1M + 1M "
        "rows), natural log; driftloop: 10 quantile bins of the reference, base 2",
    ),
    "psi (num)": (
        False,
        "Evidently: Sturges equal-width bins over both samples; driftloop: 10 quantile "
        "bins of the reference",
    ),
}


def make_data(rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """Reference and current frames; features named `*_drift` have drifted, the rest not."""
    rng = np.random.default_rng(seed)
    ref: dict[str, Any] = {}
    cur: dict[str, Any] = {}

    def numeric(name: str, draw: Callable[[bool], np.ndarray]) -> None:
        ref[name] = draw(False)
        cur[name] = draw(True)

    def normal(loc: float, scale: float, shift: float = 0.0, stretch: float = 1.0) -> Any:
        return lambda drifted: rng.normal(
            loc + (shift * scale if drifted else 0.0),
            scale * (stretch if drifted else 1.0),
            rows,
        )

    numeric("n00_normal", normal(0.0, 1.0))
    numeric("n01_normal", normal(50.0, 10.0))
    numeric("n02_normal", normal(-3.0, 0.01))
    numeric("n03_normal_big", normal(0.0, 1e6))
    numeric("n04_uniform", lambda d: rng.uniform(0.0, 1.0, rows))
    numeric("n05_student_t3", lambda d: rng.standard_t(3, rows))  # heavy tails
    numeric("n06_exponential", lambda d: rng.exponential(2.0, rows))
    numeric("n07_poisson_ties", lambda d: rng.poisson(4.0, rows).astype(float))  # many ties
    numeric("n08_lognormal", lambda d: rng.lognormal(0.0, 1.0, rows))
    numeric("n09_normal", normal(5.0, 2.0))
    numeric("n10_shift_0.01sd_drift", normal(0.0, 1.0, shift=0.01))  # tiny, still detected
    numeric("n11_shift_0.1sd_drift", normal(100.0, 15.0, shift=0.1))
    numeric("n12_shift_0.5sd_drift", normal(0.0, 1.0, shift=0.5))
    numeric("n13_scale_1.2_drift", normal(0.0, 1.0, stretch=1.2))
    numeric("n14_lognormal_drift", lambda d: rng.lognormal(0.2 if d else 0.0, 1.0, rows))
    numeric("n15_exponential_drift", lambda d: rng.exponential(2.5 if d else 2.0, rows))
    numeric("n16_poisson_ties_drift", lambda d: rng.poisson(4.3 if d else 4.0, rows).astype(float))
    numeric(
        "n17_mixture_drift",
        lambda d: np.where(
            rng.uniform(size=rows) < (0.4 if d else 0.3),
            rng.normal(3.0, 0.5, rows),
            rng.normal(0.0, 1.0, rows),
        ),
    )
    numeric("n18_t3_shift_drift", lambda d: rng.standard_t(3, rows) + (0.05 if d else 0.0))
    numeric("n19_uniform", lambda d: rng.uniform(-1e-3, 1e-3, rows) + 7.0)

    def categorical(name: str, k: int, shift: float) -> None:
        labels = np.array([f"{name[:2]}_{i:02d}" for i in range(k)], dtype=object)
        p = rng.dirichlet(np.full(k, 5.0))
        q = p.copy()
        if shift:
            q = (1 - shift) * p + shift * rng.dirichlet(np.full(k, 5.0))
        ref[name] = labels[rng.choice(k, rows, p=p)]
        cur[name] = labels[rng.choice(k, rows, p=q / q.sum())]

    categorical("c0_3cats", 3, 0.0)
    categorical("c1_5cats_drift", 5, 0.2)
    categorical("c2_10cats", 10, 0.0)
    categorical("c3_20cats_drift", 20, 0.02)
    categorical("c4_binary_drift", 2, 0.1)

    numeric_names = [n for n in ref if n.startswith("n")]
    categorical_names = [n for n in ref if n.startswith("c")]
    return pd.DataFrame(ref), pd.DataFrame(cur), numeric_names, categorical_names


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    return best, result


def evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    *,
    same_statistics: bool,
) -> dict[tuple[str, str], float]:
    """Evidently's figures as {(column, stattest): value}, Dataset wrapping included."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    ref = Dataset.from_pandas(reference, data_definition=definition)
    cur = Dataset.from_pandas(current, data_definition=definition)
    if same_statistics:
        presets = [
            DataDriftPreset(num_method="ks", cat_method="chisquare"),
            DataDriftPreset(method="psi"),
            DataDriftPreset(method="jensenshannon"),
            DataDriftPreset(columns=numeric, method="wasserstein"),
        ]
    else:
        presets = [DataDriftPreset()]
    result = Report(presets).run(reference_data=ref, current_data=cur)
    values: dict[tuple[str, str], float] = {}
    for metric in result.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            values[(config["column"], config["method"])] = float(metric["value"])
    return values


def agreement(
    reference: pd.DataFrame,
    ours: dict[str, Any],
    theirs: dict[tuple[str, str], float],
    numeric: list[str],
    categorical: list[str],
) -> list[tuple[str, int, float, float]]:
    """(statistic, columns compared, max |ours - Evidently|, max relative difference)."""
    f = ours["features"]
    log2 = math.sqrt(math.log(2.0))
    tiny = {c for c in numeric if float(np.std(reference[c].to_numpy())) < 0.001}
    pairs: dict[str, list[tuple[float, float]]] = {
        "ks.pvalue (num)": [(f[c]["ks"]["pvalue"], theirs[(c, "ks")]) for c in numeric],
        "wasserstein (num)": [
            (f[c]["wasserstein"], theirs[(c, "wasserstein")]) for c in numeric if c not in tiny
        ],
        "wasserstein (num, std<0.001)": [
            (f[c]["wasserstein"], theirs[(c, "wasserstein")]) for c in numeric if c in tiny
        ],
        "jensen_shannon (cat)": [
            (f[c]["jensen_shannon"], theirs[(c, "jensenshannon")] / log2) for c in categorical
        ],
        "psi (cat)": [(f[c]["psi"], theirs[(c, "psi")]) for c in categorical],
        "chi2.pvalue (cat)": [
            (f[c]["chi2"]["pvalue"], theirs[(c, "chisquare")]) for c in categorical
        ],
        "jensen_shannon (num)": [
            (f[c]["jensen_shannon"], theirs[(c, "jensenshannon")] / log2) for c in numeric
        ],
        "psi (num)": [(f[c]["psi"], theirs[(c, "psi")]) for c in numeric],
    }
    rows = []
    for name, values in pairs.items():
        a = np.array([v[0] for v in values], dtype=float)
        b = np.array([v[1] for v in values], dtype=float)
        absolute = np.abs(a - b)
        scale = np.maximum(np.abs(a), np.abs(b))
        relative = np.divide(absolute, scale, out=np.zeros_like(absolute), where=scale > 0)
        if values:
            rows.append((name, len(values), float(absolute.max()), float(relative.max())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per sample")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="best of N calls of each")
    parser.add_argument(
        "--skip-default", action="store_true", help="skip Evidently's default preset"
    )
    args = parser.parse_args()

    import evidently
    import scipy

    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, pandas {pd.__version__}, evidently {evidently.__version__}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )
    start = time.perf_counter()
    reference, current, numeric, categorical = make_data(args.rows, args.seed)
    features = numeric + categorical
    print(
        f"data: {len(reference):,} reference + {len(current):,} current rows, "
        f"{len(numeric)} numeric + {len(categorical)} categorical features "
        f"(made in {time.perf_counter() - start:.1f} s)"
    )

    ours_s, ours = timed(lambda: drift_report(reference, current, features), args.repeat)
    print(f"driftloop drift_report:                 {ours_s:8.2f} s")
    theirs_s, theirs = timed(
        lambda: evidently_report(reference, current, numeric, categorical, same_statistics=True),
        args.repeat,
    )
    print(
        f"Evidently, same statistics (4 presets): {theirs_s:8.2f} s   "
        f"ratio {theirs_s / ours_s:6.1f}x"
    )
    if not args.skip_default:
        default_s, _ = timed(
            lambda: evidently_report(
                reference, current, numeric, categorical, same_statistics=False
            ),
            args.repeat,
        )
        print(
            f"Evidently, default DataDriftPreset:     {default_s:8.2f} s   "
            f"ratio {default_s / ours_s:6.1f}x"
        )

    drifted = ours["drifted_features"]
    expected = [n for n in features if n.endswith("_drift")]
    print(
        f"driftloop drifted features: {len(drifted)} of {len(features)} "
        f"(generated with drift: {len(expected)}; "
        f"missed: {sorted(set(expected) - set(drifted)) or 'none'}, "
        f"extra: {sorted(set(drifted) - set(expected)) or 'none'})"
    )

    print()
    print(f"{'statistic':<28} {'cols':>4} {'max |diff|':>11} {'max rel':>9}  verdict")
    failures = 0
    for name, count, absolute, relative in agreement(reference, ours, theirs, numeric, categorical):
        same, _ = DEFINITIONS[name]
        if same:
            verdict = "ok (<= 1e-6)" if absolute <= TOLERANCE else "MISMATCH"
            failures += absolute > TOLERANCE
        else:
            verdict = "definitions differ"
        print(f"{name:<28} {count:>4} {absolute:11.3e} {relative:9.2e}  {verdict}")
    print(f"{'ks.statistic (num)':<28} {len(numeric):>4} {'-':>11} {'-':>9}  not in Evidently")
    print()
    for name, (same, text) in DEFINITIONS.items():
        print(f"- {name}: {'same' if same else 'differs'}: {text}")
    if failures:
        raise SystemExit(f"{failures} statistic(s) with the same definition disagree by > 1e-6")


if __name__ == "__main__":
    main()
