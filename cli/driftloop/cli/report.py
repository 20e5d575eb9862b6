"""`driftloop drift`: the monitor's drift report offline, as a table, JSON or an HTML page.

The figures come from `driftloop.monitor.domain.stats.drift_report`, the monitor's own code;
this module only reads the files, picks the features and renders. The HTML page is one
self-contained file (inline CSS and SVG, no scripts, no external assets); its charts are
`driftloop.shared.charts`, which the web console draws too.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from driftloop.monitor.domain.stats import (
    ALPHA,
    PSI_THRESHOLD,
    benjamini_hochberg,
    category_counts,
    drift_report,
    numeric_sample,
)
from driftloop.shared.charts import CURRENT_COLOUR, REFERENCE_COLOUR, histogram_svg
from driftloop.shared.registry import read_table
from driftloop.shared.spec import parse_spec

HISTOGRAM_BINS = 20
MAX_BARS = 20  # categories shown per feature; the rest are summed into one bar
PIPED_WIDTH = 160


@dataclass(frozen=True)
class DriftRun:
    reference_path: Path
    current_path: Path
    reference: pd.DataFrame
    current: pd.DataFrame
    document: dict[str, Any]
    psi_threshold: float
    alpha: float


def build_report(
    reference_path: Path,
    current_path: Path,
    *,
    spec_file: Path | None = None,
    target: str | None = None,
) -> DriftRun:
    """Read both files and compute the report; raises ValueError saying what is wrong.

    Features come from the spec (every column both files share when it names none), minus
    the target (`target`, else the spec's); the spec's `monitor.drift.psi_warn` is the PSI
    threshold.
    """
    features: list[str] | None = None
    psi_threshold = PSI_THRESHOLD
    if spec_file is not None:
        try:
            spec = parse_spec(spec_file.read_text())
        except OSError as exc:
            raise ValueError(f"{spec_file}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ValueError(f"{spec_file}: {exc}") from exc
        features = spec.features
        target = target or spec.target
        psi_threshold = spec.monitor.drift.psi_warn
    reference = read_table(reference_path)
    current = read_table(current_path)
    if features is None and not any(c in set(current.columns) for c in reference.columns):
        raise ValueError(f"{reference_path} and {current_path} share no column")
    try:
        document = drift_report(
            reference, current, features, target=target, psi_threshold=psi_threshold
        )
    except TypeError as exc:  # e.g. lists or dicts in a Parquet column
        raise ValueError(f"cannot compare the columns of these files: {exc}") from exc
    if not document["features"]:
        raise ValueError("no feature left to compare (the only shared column is the target)")
    return DriftRun(
        reference_path, current_path, reference, current, document, psi_threshold, ALPHA
    )


def adjusted_pvalues(document: dict[str, Any]) -> dict[str, float]:
    """Benjamini-Hochberg adjusted p-values per tested feature, as the report decided them."""
    raw = {
        name: (f["ks"] or f["chi2"])["pvalue"]
        for name, f in document["features"].items()
        if (f["ks"] or f["chi2"]) is not None
    }
    return dict(zip(raw, benjamini_hochberg(list(raw.values())).tolist(), strict=True))


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _rows(run: DriftRun) -> list[list[str]]:
    adjusted = adjusted_pvalues(run.document)
    rows = []
    for name, f in run.document["features"].items():
        test = f["ks"] or f["chi2"]
        rows.append(
            [
                name,
                f["kind"],
                _num(f["psi"]),
                _num(f["ks"]["statistic"]) if f["ks"] else "-",
                _num(f["chi2"]["statistic"]) if f["chi2"] else "-",
                _num(test["pvalue"], 3) if test else "-",
                _num(adjusted.get(name), 3),
                _num(f["jensen_shannon"]),
                _num(f["wasserstein"]),
                str(f["missing"]),
                "yes" if f["drifted"] else "no",
            ]
        )
    return rows


HEADERS = [
    "feature",
    "kind",
    "PSI",
    "KS D",
    "chi2",
    "p",
    "p (BH)",
    "JS",
    "W/sd",
    "missing",
    "drifted",
]


def summary(run: DriftRun) -> str:
    doc = run.document
    rows = doc["rows"]
    return (
        f"{len(doc['drifted_features'])} of {len(doc['features'])} features drifted "
        f"(PSI >= {run.psi_threshold:g} or BH-adjusted p < {run.alpha:g}); dataset drift: "
        f"{'yes' if doc['dataset_drift'] else 'no'}; rows: reference {rows['reference']}, "
        f"current {rows['current']}"
    )


def print_table(run: DriftRun, console: Console) -> None:
    """One row per feature; piped output (CI logs) gets a wide page instead of 80 columns."""
    if not console.is_terminal:
        console = Console(file=console.file, width=max(console.width, PIPED_WIDTH))
    table = Table(
        title=f"drift of {run.current_path} against {run.reference_path}", box=box.SIMPLE_HEAD
    )
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("feature", "kind") else "right")
    for row in _rows(run):
        style = "red" if row[-1] == "yes" else None
        table.add_row(*row, style=style)
    console.print(table)
    console.print(summary(run))


# HTML --------------------------------------------------------------------------------------


def _numeric_bars(ref: np.ndarray, cur: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Equal-width bins over the pooled 0.5%-99.5% range; values beyond go to the end bins."""
    pooled = np.concatenate((ref, cur))
    lo, hi = (float(q) for q in np.quantile(pooled, [0.005, 0.995]))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
    labels = [f"{a:.4g} to {b:.4g}" for a, b in itertools.pairwise(edges)]
    counts = [np.histogram(np.clip(v, lo, hi), edges)[0] for v in (ref, cur)]
    return labels, counts[0] / max(ref.size, 1), counts[1] / max(cur.size, 1)


def _categorical_bars(ref: pd.Series, cur: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    both = pd.concat({"r": ref, "c": cur}, axis=1).fillna(0)
    shares = both / both.sum().replace(0, 1)
    order = (shares["r"] + shares["c"]).sort_values(ascending=False, kind="stable").index
    shares = shares.loc[order]
    if len(shares) > MAX_BARS:
        rest = shares.iloc[MAX_BARS - 1 :].sum()
        shares = shares.iloc[: MAX_BARS - 1]
        shares.loc[f"({len(order) - MAX_BARS + 1} more)"] = rest
    return (
        [str(i) for i in shares.index],
        shares["r"].to_numpy(float),
        shares["c"].to_numpy(float),
    )


def _histogram(run: DriftRun, name: str, kind: str) -> str:
    if kind == "numeric":
        ref, _ = numeric_sample(run.reference[name])
        cur, _ = numeric_sample(run.current[name])
        if ref.size == 0 and cur.size == 0:
            return "<p class='note'>no values in either file</p>"
        return histogram_svg(*_numeric_bars(ref, cur), numeric=True)
    ref_counts, _ = category_counts(run.reference[name])
    cur_counts, _ = category_counts(run.current[name])
    if ref_counts.empty and cur_counts.empty:
        return "<p class='note'>no values in either file</p>"
    return histogram_svg(*_categorical_bars(ref_counts, cur_counts), numeric=False)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child, td:nth-child(2) { text-align: left; }
tr.drifted td { color: #b00020; font-weight: 600; }
section { margin: 2em 0; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }
.note { color: #666; font-size: 0.9em; }
"""


def render_html(run: DriftRun) -> str:
    """A self-contained page: the statistics table, then a histogram per feature."""
    doc = run.document
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADERS)
    body = "".join(
        f"<tr class='{'drifted' if row[-1] == 'yes' else ''}'>"
        + "".join(f"<td>{esc(cell)}</td>" for cell in row)
        + "</tr>"
        for row in _rows(run)
    )
    sections = []
    for name, f in doc["features"].items():
        verdict = "drifted" if f["drifted"] else "no drift"
        sections.append(
            f"<section><h2>{esc(name)} <small>({esc(f['kind'])}, {verdict}, "
            f"{f['missing']} missing in current)</small></h2>{_histogram(run, name, f['kind'])}"
            "</section>"
        )
    legend = (
        f"<p class='legend'>share of rows per bin:<span style='background:{REFERENCE_COLOUR}'>"
        f"</span>reference<span style='background:{CURRENT_COLOUR}'></span>current</p>"
    )
    note = (
        "<p class='note'>PSI on the reference's quantile bins; KS (numeric) and chi-square "
        "(categorical) p-values are adjusted across features with Benjamini-Hochberg; JS is the "
        "Jensen-Shannon distance (base 2); W/sd is the Wasserstein distance in standard "
        "deviations of the reference. Numeric histograms span the pooled 0.5%-99.5% range; "
        "values beyond it are counted in the end bins.</p>"
    )
    title = f"drift of {run.current_path.name} against {run.reference_path.name}"
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}"
        f"</title><style>{STYLE}</style></head><body><h1>{esc(title)}</h1>"
        f"<p>{esc(summary(run))}</p><table><thead><tr>{head}</tr></thead><tbody>{body}"
        f"</tbody></table>{note}{legend}{''.join(sections)}</body></html>\n"
    )


def write_html(run: DriftRun, path: Path) -> None:
    """Write the page; raises ValueError when the file cannot be written."""
    try:
        path.write_text(render_html(run), encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot write it ({exc.strerror})") from exc
