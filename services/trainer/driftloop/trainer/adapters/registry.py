"""The trainer's MLflow side: read the champion's training set, log and register a run."""

from __future__ import annotations

import functools
import importlib.metadata
import io
import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from pyarrow.lib import ArrowException

from driftloop.shared.config import Settings
from driftloop.shared.events import RetrainRequested
from driftloop.shared.modeling import prepare
from driftloop.shared.profile import build_profile
from driftloop.shared.registry import (
    ARTIFACT_DIGEST,
    CHALLENGER,
    CHAMPION,
    VersionRef,
    experiment_id,
    read_parquet_artifact,
    record_artifact_digest,
    version_by_alias,
    version_ref,
)
from driftloop.shared.spec import ModelSpec, format_duration
from driftloop.trainer.domain.candidates import Selection
from driftloop.trainer.domain.dataset import TrainingSet, content_hash
from driftloop.trainer.domain.training import Fitted

REFIT = "driftloop.refit"  # refitted on every row after the holdout was scored
# What loading a version needs besides its estimator's own package (and mlflow, which MLflow
# adds itself).
BASE_REQUIREMENTS = ("scikit-learn", "cloudpickle", "numpy", "pandas", "scipy")


@functools.cache
def pip_requirements(estimator: str) -> list[str]:
    """The packages a version of a recipe with `estimator` (a dotted class path) needs,
    pinned to the versions installed here. Given to MLflow rather than inferred: its inference
    loads the model again in a subprocess, about 3 s a version on a quiet machine and more
    beside a busy gateway, rows a drifted stream serves with the old model meanwhile."""
    top = estimator.split(".", 1)[0]
    packages = {*BASE_REQUIREMENTS, *importlib.metadata.packages_distributions().get(top, [])}
    pinned = []
    for name in sorted(packages):
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pinned


logger = logging.getLogger(__name__)

CYCLE = "driftloop.cycle_id"  # run tag, and model version tag set at registration
LABELLED_UNTIL = "driftloop.labelled_until"
DATASET_VERSION = "driftloop.dataset_version"
DATASET_ARTIFACT = "data/dataset.parquet"


class DatasetMismatchError(ValueError):
    """A stored training set does not hash to the version its run records."""


@dataclass(frozen=True)
class Lineage:
    """Where a run's rows and code came from, besides the spec and the training set."""

    parent: str | None  # the champion's version when the training started
    labelled_until: str | None  # newest label time among the recent rows (ISO)
    train_seconds: float  # the fit in the worker
    window: str  # "rows" (newest max_rows), "time" (and within trainer.window) or "file"
    recent_since: str | None = None  # recent rows were labelled after this (ISO)
    onset: str | None = None  # the episode's onset: recent rows were served after it (ISO)


@dataclass(frozen=True)
class Champion:
    ref: VersionRef
    dataset: pd.DataFrame
    labelled_until: str | None
    metrics: dict[str, float] = field(default_factory=dict)  # its holdout metrics
    features: list[str] | None = None  # what its pipeline reads (None: unknown, use the spec's)


class TrainerRegistry:
    def __init__(self, client: MlflowClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def champion(self, model: str) -> Champion | None:
        ref = version_by_alias(self.client, model, CHAMPION)
        if ref is None:
            return None
        run = self.client.get_run(ref.run_id)
        dataset = read_parquet_artifact(self.client, ref.run_id, DATASET_ARTIFACT)
        tagged = run.data.tags.get("driftloop.features")
        return Champion(
            ref,
            dataset,
            run.data.tags.get(LABELLED_UNTIL),
            metrics=dict(run.data.metrics),
            features=json.loads(tagged) if tagged else None,
        )

    def bootstrap_data(self, uri: str) -> pd.DataFrame:
        from driftloop.shared.registry import read_table

        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
            return read_table(Path(local))

    def existing(self, model: str, cycle_id: str) -> tuple[str, str] | None:
        """(version, run_id) when this cycle already registered a version (a redelivery),
        finished as `log` finishes one: a crash, or a failed call, may have come between the
        registration and the artifact hash or the alias. No event of the cycle went out yet
        (it goes with the request's inbox row), so nothing moved the alias on meanwhile."""
        found = version_of_cycle(self.client, model, cycle_id)
        if found is not None:
            self._finish(model, found[0])
        return found

    def _finish(self, model: str, version: str) -> None:
        """The hash its loaders check (unless recorded already), then the challenger alias."""
        if ARTIFACT_DIGEST not in (self.client.get_model_version(model, version).tags or {}):
            record_artifact_digest(self.client, model, version)
        self.client.set_registered_model_alias(model, CHALLENGER, version)

    def log(
        self,
        event: RetrainRequested,
        spec: ModelSpec,
        ts: TrainingSet,
        fitted: Fitted,
        lineage: Lineage,
    ) -> tuple[str, str]:
        """Log params, metrics, dataset, holdout, profile and the model; register a version."""
        exp = experiment_id(self.client, self.settings, spec.model)
        features = ts.features
        # The signature describes what clients send (booleans stay booleans); the pipeline is
        # fed the same rows through `prepare`, as the gateway does.
        raw = fitted.train[features].head(20)
        signature = infer_signature(raw, fitted.pipeline.predict(prepare(raw, features)))
        with mlflow.start_run(
            experiment_id=exp,
            run_name=f"{spec.model}-{event.cycle_id[:8]}",
            tags={
                **lineage_tags(event, spec, ts, lineage),
                **selection_tags(fitted.selection),
                **({REFIT: "true"} if fitted.refit else {}),
            },
        ) as run:
            mlflow.log_params({**lineage_params(spec, ts), **selection_params(fitted.selection)})
            mlflow.log_metrics(
                {
                    **fitted.metrics,
                    "train_seconds": lineage.train_seconds,
                    "rows": float(len(ts.frame)),
                }
            )
            dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]  # lazy submodule
                ts.frame,
                name=f"{spec.model}-{ts.version}",
                targets=spec.target,
                digest=ts.version,
            )
            mlflow.log_input(dataset, context="training")
            mlflow.set_tag("driftloop.dataset_uri", f"runs:/{run.info.run_id}/{DATASET_ARTIFACT}")
            # the rows the model learned from (with the `recent` candidate, the post-onset
            # rows alone: the regime it will serve) and its answers on them, the reference of
            # feature and prediction drift
            learned = profiled_rows(ts, fitted)
            predictions = fitted.pipeline.predict(prepare(learned[features], features))
            profile = build_profile(
                spec.model,
                learned,
                features,
                predictions=predictions,
                target=spec.target,
                task=spec.task,
            )
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                ts.frame.to_parquet(root / "dataset.parquet", index=False)
                fitted.train.to_parquet(root / "train.parquet", index=False)
                fitted.holdout.to_parquet(root / "holdout.parquet", index=False)
                (root / "reference_profile.json").write_text(profile.model_dump_json())
                (root / "spec.json").write_text(spec.model_dump_json())
                mlflow.log_artifacts(str(root), artifact_path="data")
            mlflow.sklearn.log_model(
                fitted.pipeline,
                name="model",
                signature=signature,
                serialization_format="cloudpickle",
                input_example=None,
                pip_requirements=pip_requirements(spec.recipe.estimator),
            )
            version, run_id = register_once(
                self.client, spec.model, run.info.run_id, event.cycle_id
            )
            # No event names the version until `_finish` is done (on a retry, `existing`
            # finishes it): a version is announced only with the hash its loaders check.
            self._finish(spec.model, version)
            return version, run_id

    def materialise(self, model: str, version: str) -> pd.DataFrame:
        """The exact training set of a registered version, checked against its content hash."""
        return materialise(self.client, model, version)


def version_of_cycle(client: MlflowClient, model: str, cycle_id: str) -> tuple[str, str] | None:
    """(version, run_id) of the version of `model` registered for `cycle_id`, if any."""
    query = f"name = '{model}'"
    if "'" not in cycle_id:  # a filter string cannot quote one: then the name's versions
        query += f" AND tags.`{CYCLE}` = '{cycle_id}'"
    found = [
        mv for mv in client.search_model_versions(query) if (mv.tags or {}).get(CYCLE) == cycle_id
    ]
    if not found:
        return None
    first = min(found, key=lambda mv: int(mv.version))
    return str(first.version), str(first.run_id)


def register_once(client: MlflowClient, model: str, run_id: str, cycle_id: str) -> tuple[str, str]:
    """Register the run's model (logged as `model`) as a version of `model` for `cycle_id`,
    unless the cycle has one already; returns (version, run_id). The cycle is a tag of the
    registering call itself: whatever fails after it (its answer lost, a later call), the
    version carries its cycle, so a retry finds it rather than registering a second one."""
    found = version_of_cycle(client, model, cycle_id)
    if found is not None:  # an earlier or concurrent attempt of this cycle got there first
        return found
    mv = mlflow.register_model(f"runs:/{run_id}/model", model, tags={CYCLE: cycle_id})
    return str(mv.version), run_id


def lineage_tags(
    event: RetrainRequested, spec: ModelSpec, ts: TrainingSet, lineage: Lineage
) -> dict[str, str]:
    """Run tags: the cycle, the data's version and window, the parent and the code."""
    tags = {
        CYCLE: event.cycle_id,
        "driftloop.trigger": event.trigger,
        "driftloop.reason": event.reason[:500],
        DATASET_VERSION: ts.version,
        "driftloop.parent_version": lineage.parent or "",
        "driftloop.features": json.dumps(ts.features),
        "driftloop.task": spec.task,
        "driftloop.target": spec.target,
        "driftloop.recipe": spec.recipe.model_dump_json(),
        "driftloop.window": lineage.window,
        "driftloop.code_version": code_version(),
        "driftloop.package_version": package_version(),
    }
    if event.cause_id:
        tags["driftloop.cause_id"] = event.cause_id
    if git_commit():
        tags["driftloop.git_commit"] = git_commit()
    if lineage.recent_since:
        tags["driftloop.recent_since"] = lineage.recent_since
    if lineage.labelled_until:
        tags[LABELLED_UNTIL] = lineage.labelled_until
    if lineage.onset:
        tags["driftloop.onset"] = lineage.onset
    return tags


def profiled_rows(ts: TrainingSet, fitted: Fitted) -> pd.DataFrame:
    """The rows the monitor's reference profile describes: on a cycle with an onset the recent
    (post-onset) rows, the regime the version is deployed into, whichever candidate trained it
    (older rows in its training set would otherwise read as drift as soon as it serves);
    otherwise the whole training set."""
    if fitted.selection is not None:
        return ts.frame.iloc[: ts.recent_rows]
    return ts.frame


def _param_key(candidate: str) -> str:
    return candidate.replace("+", "_and_")  # MLflow keys take no "+"


def selection_tags(selection: Selection | None) -> dict[str, str]:
    """Run tags of a cycle with an onset: the chosen candidate and every candidate's
    validation (JSON)."""
    if selection is None:
        return {}
    return {
        "driftloop.candidate": selection.chosen,
        "driftloop.candidates": json.dumps(
            {
                "chosen": selection.chosen,
                "metric": selection.metric,
                "validation_rows": selection.validation_rows,
                "note": selection.note,
                "candidates": [c.as_json() for c in selection.scores],
            }
        ),
    }


def selection_params(selection: Selection | None) -> dict[str, Any]:
    """Run params of a cycle with an onset: the chosen candidate, and per candidate its
    validation score (or why it was skipped) and its rows."""
    if selection is None:
        return {}
    params: dict[str, Any] = {
        "candidate": selection.chosen,
        "candidate_metric": selection.metric,
        "candidate_validation_rows": selection.validation_rows,
    }
    for c in selection.scores:
        key = f"candidate.{_param_key(c.name)}"
        params[f"{key}.score"] = c.score if c.score is not None else f"skipped: {c.note}"[:250]
        params[f"{key}.recent_rows"] = c.recent_rows
        params[f"{key}.older_rows"] = c.older_rows
    return params


def lineage_params(spec: ModelSpec, ts: TrainingSet) -> dict[str, Any]:
    """Run params: the recipe, how the set was drawn, and the counts of each part."""
    window = spec.trainer.window
    return {
        "estimator": spec.recipe.estimator,
        **{f"param.{k}": v for k, v in spec.recipe.params.items()},
        "recent_rows": ts.recent_rows,
        "older_rows": ts.older_rows,
        "reference_rows": ts.reference_rows,
        "recent_duplicates": ts.recent_duplicates,
        "reference_duplicates": ts.reference_duplicates,
        "max_rows": spec.trainer.max_rows,
        "window": format_duration(window) if window is not None else "none",
        "deduplicate": spec.trainer.deduplicate,
        "holdout": spec.trainer.holdout,
        "seed": spec.trainer.seed,
        "time_limit": format_duration(spec.trainer.time_limit),
    }


def stored_form(ts: TrainingSet) -> TrainingSet:
    """The training set as its parquet artifact will read back, versioned by that content.

    Training on exactly what is stored makes a version re-materialise to the same hash; a
    frame parquet cannot hold (a column of mixed types) raises ValueError.
    """
    buffer = io.BytesIO()
    try:
        ts.frame.to_parquet(buffer, index=False)
    except (ValueError, TypeError, ArrowException) as exc:
        raise ValueError(f"the training set cannot be stored as parquet: {exc}") from exc
    frame = pd.read_parquet(io.BytesIO(buffer.getvalue()))
    return replace(ts, frame=frame, version=content_hash(frame))


def materialise(client: MlflowClient, model: str, version: str) -> pd.DataFrame:
    """A version's training set from its run's artifact; raises DatasetMismatchError when it
    no longer hashes to the run's dataset version (changed or truncated storage)."""
    ref = version_ref(client, model, version)
    expected = client.get_run(ref.run_id).data.tags.get(DATASET_VERSION)
    frame = read_parquet_artifact(client, ref.run_id, DATASET_ARTIFACT)
    actual = content_hash(frame)
    if actual != expected:
        raise DatasetMismatchError(
            f"{model} version {version}: the stored training set hashes to {actual}, "
            f"the run records {expected}"
        )
    return frame


def records_frame(rows: list[Any], target: str) -> pd.DataFrame:
    """Joined samples as a DataFrame with the target column."""
    return pd.DataFrame([{**(r.features or {}), target: r.label} for r in rows])


@functools.cache
def package_version() -> str:
    """The installed driftloop distribution's version ("unknown" outside an install)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("driftloop")
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def git_commit() -> str:
    """The commit of the checkout this code runs from ("" when it is not a git checkout)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> str:
    """The driftloop package version, and the short git commit when running from a checkout."""
    commit = git_commit()
    return f"{package_version()}+{commit[:7]}" if commit else package_version()
