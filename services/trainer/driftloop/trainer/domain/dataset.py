"""Assembling and checking a training set: pure functions over DataFrames."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import pandas as pd

from driftloop.shared.events import CheckResult
from driftloop.shared.spec import ModelSpec
from driftloop.trainer.domain.labels import check_label_issues
from driftloop.trainer.domain.validation import (
    check_columns_present,
    check_duplicates,
    check_extra_columns,
    check_finite,
    duplicated,
    reference_checks,
    served_checks,
)


@dataclass(frozen=True)
class TrainingSet:
    frame: pd.DataFrame
    features: list[str]
    recent_rows: int  # first in the frame: the rows the holdout is drawn from
    reference_rows: int  # last: rows of the champion's training set
    version: str  # content hash
    source_columns: tuple[str, ...] = ()  # the recent rows' columns before the spec's selection
    received: pd.DataFrame | None = None  # the recent rows before de-duplication (spec columns)
    recent_duplicates: int = 0  # recent rows dropped as repeats of a newer recent row
    reference_duplicates: int = 0  # reference rows dropped as repeats of a kept row
    # between the two: labelled rows served before a drift episode's onset (cycles with an
    # onset only; they may train but are never held out)
    older_rows: int = 0


def feature_columns(spec: ModelSpec, frame: pd.DataFrame) -> list[str]:
    """The spec's features, or every column but the target."""
    if spec.features is not None:
        return list(spec.features)
    return [c for c in frame.columns if c != spec.target]


def content_hash(frame: pd.DataFrame) -> str:
    """A stable hash of the rows and columns (order included): the dataset's version."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()[:16]


def recent_since(
    champion_cut: datetime | None, window: timedelta | None, *, now: datetime
) -> datetime | None:
    """The label time recent rows must be newer than: the champion's training set's cut, or
    `now - window` when that is later; None takes every labelled row (newest first)."""
    bounds = [b for b in (champion_cut, None if window is None else now - window) if b]
    return max(bounds) if bounds else None


def _selected(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame.reindex(columns=columns)


def _first_unique(repeats: npt.NDArray[np.bool_], n: int) -> tuple[npt.NDArray[np.intp], int]:
    """Positions of the first `n` rows that repeat no earlier row, and how many repeats were
    skipped on the way to them."""
    kept = np.flatnonzero(~repeats)[:n]
    considered = int(kept[-1]) + 1 if n and len(kept) == n else len(repeats)
    return kept, int(repeats[:considered].sum())


def assemble(
    recent: pd.DataFrame,
    reference: pd.DataFrame | None,
    spec: ModelSpec,
    *,
    older: pd.DataFrame | None = None,
    max_rows: int | None = None,
    deduplicate: bool | None = None,
) -> TrainingSet:
    """Recent labelled rows first (up to max_rows), filled from `older` rows, then the
    reference.

    Recent rows are unique by prediction id (the samples table's key) and labelled after the
    champion's training set was cut, so the parts do not overlap by id. On a cycle with an
    onset, `recent` are the rows served after it and `older` the labelled rows served before it
    (since the cut): they fill like the reference and are never held out. With
    `trainer.deduplicate` a row that exactly repeats an earlier one (features and label;
    recent rows come newest first, then the older rows, then the reference) is skipped, and
    the counts skipped in each part are kept; the duplicates check still sees the recent rows
    as received. `max_rows` and `deduplicate` override the spec's (the first version takes
    its whole file as given: repeats there are the data's weights, not a replayed batch).
    """
    max_rows = spec.trainer.max_rows if max_rows is None else max_rows
    key = [*feature_columns(spec, recent), spec.target]
    received = _selected(recent.head(max_rows), key)
    dedupe = spec.trainer.deduplicate if deduplicate is None else deduplicate
    recent_dropped = reference_dropped = 0
    if dedupe:
        repeats = duplicated(_selected(recent, key)).to_numpy()
        kept, recent_dropped = _first_unique(repeats, max_rows)
        recent = recent.iloc[kept]
    else:
        recent = recent.head(max_rows)
    room = max_rows - len(recent)
    n_older = 0 if older is None else len(older)
    parts = [p for p in (older, reference) if p is not None and len(p)]
    source = pd.concat(parts, ignore_index=True) if parts else None
    fill = recent.iloc[0:0]
    kept_older = 0
    if source is not None and room > 0:
        if dedupe:
            both = pd.concat([_selected(recent, key), _selected(source, key)], ignore_index=True)
            repeats = duplicated(both).to_numpy()[len(recent) :]
            kept, reference_dropped = _first_unique(repeats, room)
            fill = source.iloc[kept]
            kept_older = int((kept < n_older).sum())
        else:
            fill = source.head(room)
            kept_older = min(n_older, len(fill))
    frame = pd.concat([recent, fill], ignore_index=True) if len(fill) else recent
    features = feature_columns(spec, frame)
    columns = [*features, spec.target]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        frame = frame.reindex(columns=[*frame.columns, *missing])
    frame = frame[columns].reset_index(drop=True)
    return TrainingSet(
        frame=frame,
        features=features,
        recent_rows=len(recent),
        reference_rows=len(fill) - kept_older,
        version=content_hash(frame),
        source_columns=tuple(map(str, recent.columns)),
        received=received,
        recent_duplicates=recent_dropped,
        reference_duplicates=reference_dropped,
        older_rows=kept_older,
    )


def validate(
    ts: TrainingSet,
    spec: ModelSpec,
    *,
    reference: pd.DataFrame | None = None,
    served: pd.DataFrame | None = None,
) -> list[CheckResult]:
    """Every check of the gate; any failed check means the set is rejected (validation.py).

    Schema, size, label, impossible-value and duplicate checks always run on the recent rows.
    With `served` (the features the gateway served over the same period, labelled or not) the
    recent rows' ranges, categories and missing values are judged against them. With a
    `reference` (the champion's training set) the column kinds are compared with it, the label
    balance's move is reported, and a classifier's label consistency among the recent rows is
    compared with the reference's (label_issues, a few seconds: run it off the event loop).
    At bootstrap there is neither, and those checks are skipped.
    """
    columns = [*ts.features, spec.target]
    recent = ts.frame.iloc[: ts.recent_rows] if ts.recent_rows else ts.frame
    checks = [
        check_columns_present(recent, columns),
        check_extra_columns(
            ts.source_columns,
            columns,
            features_listed=spec.features is not None,
            reference=reference,
        ),
    ]
    labelled = int(ts.frame[spec.target].iloc[: ts.recent_rows].notna().sum())
    checks.append(
        CheckResult(
            name="min_rows",
            figure=labelled,
            threshold=spec.trainer.min_rows,
            passed=labelled >= spec.trainer.min_rows,
        )
    )
    frame = ts.frame
    if spec.task == "classification":
        classes = int(frame[spec.target].nunique(dropna=True))
        checks.append(
            CheckResult(
                name="label_classes",
                figure=classes,
                threshold=2,
                passed=classes >= 2,
                detail="a classifier needs at least two classes",
            )
        )
    else:
        numeric = bool(pd.api.types.is_numeric_dtype(frame[spec.target]))
        checks.append(
            CheckResult(name="numeric_target", figure=float(numeric), threshold=1, passed=numeric)
        )
    baseline = None if reference is None else reference.reindex(columns=columns)
    received = recent if ts.received is None else ts.received.reindex(columns=columns)
    checks.append(check_finite(recent, columns))
    checks.append(check_duplicates(received, baseline))
    if served is not None and not served.empty:
        checks.extend(served_checks(recent, served, ts.features))
    if reference is not None:
        checks.extend(reference_checks(recent, reference, ts.features, spec.target, task=spec.task))
        checks.append(
            check_label_issues(
                recent, reference, ts.features, spec.target, task=spec.task, seed=spec.trainer.seed
            )
        )
    return checks
