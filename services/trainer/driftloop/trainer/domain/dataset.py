"""Assembling and checking a training set: pure functions over DataFrames."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd

from driftloop.shared.events import CheckResult
from driftloop.shared.spec import ModelSpec
from driftloop.trainer.domain.validation import (
    ChampionEvidence,
    check_columns_present,
    check_duplicates,
    check_extra_columns,
    check_label_flips,
    reference_checks,
)


@dataclass(frozen=True)
class TrainingSet:
    frame: pd.DataFrame
    features: list[str]
    recent_rows: int
    reference_rows: int
    version: str  # content hash
    source_columns: tuple[str, ...] = ()  # the recent rows' columns before the spec's selection


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


def assemble(recent: pd.DataFrame, reference: pd.DataFrame | None, spec: ModelSpec) -> TrainingSet:
    """Recent labelled rows first (up to max_rows), filled from the reference.

    Recent rows are unique by prediction id (the samples table's key) and labelled after the
    champion's training set was cut, so the two parts do not overlap.
    """
    recent = recent.head(spec.trainer.max_rows)
    room = spec.trainer.max_rows - len(recent)
    fill = reference.head(room) if reference is not None and room > 0 else recent.iloc[0:0]
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
        reference_rows=len(fill),
        version=content_hash(frame),
        source_columns=tuple(map(str, recent.columns)),
    )


def validate(
    ts: TrainingSet,
    spec: ModelSpec,
    *,
    reference: pd.DataFrame | None = None,
    champion: ChampionEvidence | None = None,
) -> list[CheckResult]:
    """Every check of the gate; any failed check means the set is rejected.

    Schema, size, label and duplicate checks always run on the recent rows. With a `reference`
    (the champion's training set) the recent rows are also compared with it (types, ranges,
    categories, missing values, label shift); with `champion` evidence (a classifier's
    predictions on the recent rows and its holdout error) the labels are checked for flips.
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
    checks.append(check_duplicates(recent, baseline))
    if reference is not None:
        checks.extend(reference_checks(recent, reference, ts.features, spec.target, task=spec.task))
    if champion is not None:
        checks.append(check_label_flips(recent[spec.target], champion))
    return checks
