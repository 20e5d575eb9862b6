"""The trainer's MLflow side: read the champion's training set, log and register a run."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature

from driftloop.shared.config import Settings
from driftloop.shared.events import RetrainRequested
from driftloop.shared.modeling import prepare
from driftloop.shared.profile import build_profile
from driftloop.shared.registry import (
    CHALLENGER,
    CHAMPION,
    VersionRef,
    experiment_id,
    load_model,
    read_parquet_artifact,
    version_by_alias,
)
from driftloop.shared.spec import ModelSpec
from driftloop.trainer.domain.dataset import TrainingSet
from driftloop.trainer.domain.training import Fitted
from driftloop.trainer.domain.validation import ChampionEvidence

logger = logging.getLogger(__name__)

LABELLED_UNTIL = "driftloop.labelled_until"


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
        dataset = read_parquet_artifact(self.client, ref.run_id, "data/dataset.parquet")
        tagged = run.data.tags.get("driftloop.features")
        return Champion(
            ref,
            dataset,
            run.data.tags.get(LABELLED_UNTIL),
            metrics=dict(run.data.metrics),
            features=json.loads(tagged) if tagged else None,
        )

    def champion_evidence(
        self, champion: Champion, recent: pd.DataFrame, features: list[str]
    ) -> ChampionEvidence:
        """The champion's predictions on the recent rows and its holdout error rate.

        Rows it cannot predict (columns it needs are missing or unreadable) leave the
        predictions out, with the reason: the schema checks report that data on their own.
        """
        accuracy = champion.metrics.get("accuracy")
        error = None if accuracy is None else 1.0 - accuracy
        pipeline = load_model(champion.ref.model, champion.ref.version)
        needed = champion.features or features
        try:
            predictions = list(pipeline.predict(prepare(recent, needed)))
        except (KeyError, ValueError, TypeError) as exc:
            logger.warning(
                "champion cannot predict the recent rows",
                extra={"model": champion.ref.model, "version": champion.ref.version},
            )
            return ChampionEvidence(None, error, problem=f"the champion cannot predict: {exc}")
        return ChampionEvidence(predictions, error)

    def bootstrap_data(self, uri: str) -> pd.DataFrame:
        from driftloop.shared.registry import read_table

        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
            return read_table(Path(local))

    def existing(self, model: str, cycle_id: str) -> tuple[str, str] | None:
        """(version, run_id) when this cycle already registered a version (a redelivery)."""
        for mv in self.client.search_model_versions(f"name = '{model}'"):
            if (mv.tags or {}).get("driftloop.cycle_id") == cycle_id:
                return str(mv.version), str(mv.run_id)
        return None

    def log(
        self,
        event: RetrainRequested,
        spec: ModelSpec,
        ts: TrainingSet,
        fitted: Fitted,
        *,
        parent: str | None,
        labelled_until: str | None,
        train_seconds: float,
    ) -> tuple[str, str]:
        """Log params, metrics, dataset, holdout, profile and the model; register a version."""
        exp = experiment_id(self.client, self.settings, spec.model)
        features = ts.features
        # The signature describes what clients send (booleans stay booleans); the pipeline is
        # fed the same rows through `prepare`, as the gateway does.
        raw = fitted.train[features].head(20)
        signature = infer_signature(raw, fitted.pipeline.predict(prepare(raw, features)))
        tags = {
            "driftloop.cycle_id": event.cycle_id,
            "driftloop.trigger": event.trigger,
            "driftloop.reason": event.reason[:500],
            "driftloop.dataset_version": ts.version,
            "driftloop.parent_version": parent or "",
            "driftloop.features": json.dumps(features),
            "driftloop.task": spec.task,
            "driftloop.target": spec.target,
            "driftloop.code_version": code_version(),
        }
        if labelled_until:
            tags[LABELLED_UNTIL] = labelled_until
        with mlflow.start_run(
            experiment_id=exp, run_name=f"{spec.model}-{event.cycle_id[:8]}", tags=tags
        ) as run:
            mlflow.log_params(
                {
                    "estimator": spec.recipe.estimator,
                    **{f"param.{k}": v for k, v in spec.recipe.params.items()},
                    "recent_rows": ts.recent_rows,
                    "reference_rows": ts.reference_rows,
                    "holdout": spec.trainer.holdout,
                }
            )
            mlflow.log_metrics(
                {**fitted.metrics, "train_seconds": train_seconds, "rows": float(len(ts.frame))}
            )
            dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]  # lazy submodule
                ts.frame, name=f"{spec.model}-{ts.version}", targets=spec.target, digest=ts.version
            )
            mlflow.log_input(dataset, context="training")
            profile = build_profile(spec.model, ts.frame, features)
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                ts.frame.to_parquet(root / "dataset.parquet", index=False)
                fitted.train.to_parquet(root / "train.parquet", index=False)
                fitted.holdout.to_parquet(root / "holdout.parquet", index=False)
                (root / "reference_profile.json").write_text(profile.model_dump_json())
                (root / "spec.json").write_text(spec.model_dump_json())
                mlflow.log_artifacts(str(root), artifact_path="data")
            info = mlflow.sklearn.log_model(
                fitted.pipeline,
                name="model",
                signature=signature,
                registered_model_name=spec.model,
                serialization_format="cloudpickle",
                input_example=None,
            )
            version = str(info.registered_model_version)
            self.client.set_model_version_tag(
                spec.model, version, "driftloop.cycle_id", event.cycle_id
            )
            self.client.set_registered_model_alias(spec.model, CHALLENGER, version)
            return version, run.info.run_id


def records_frame(rows: list[Any], target: str) -> pd.DataFrame:
    """Joined samples as a DataFrame with the target column."""
    return pd.DataFrame([{**(r.features or {}), target: r.label} for r in rows])


def code_version() -> str:
    """The driftloop package version, and the git commit when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("driftloop")
    except PackageNotFoundError:
        package = "unknown"
    try:
        import subprocess

        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{package}+{commit}" if commit else package
