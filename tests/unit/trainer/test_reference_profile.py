"""The reference profile the trainer logs with a run: features, the fitted model's
predictions on the training rows, and the labels (real MLflow store, SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from driftloop.shared.config import Settings
from driftloop.shared.events import RetrainRequested
from driftloop.shared.modeling import prepare
from driftloop.shared.profile import ReferenceProfile
from driftloop.shared.registry import configure_mlflow, read_json_artifact
from driftloop.shared.spec import parse_spec
from driftloop.trainer.adapters.registry import Lineage, TrainerRegistry
from driftloop.trainer.domain.dataset import assemble
from driftloop.trainer.domain.training import fit


def test_the_logged_profile_holds_the_models_predictions_and_the_labels(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    spec = parse_spec("model: churn\ntarget: churned\n")
    rng = np.random.default_rng(4)
    tenure = rng.gamma(2.0, 12.0, 400)
    frame = pd.DataFrame(
        {
            "tenure": tenure,
            "plan": rng.choice(["basic", "pro"], 400),
            "churned": (tenure < 15).astype(int),
        }
    )
    ts = assemble(frame, None, spec)
    fitted = fit(ts.frame, ts.features, spec)
    event = RetrainRequested(
        model="churn",
        cycle_id="c1",
        trigger="manual",
        reason="test",
        requested_at=datetime.now(UTC),
    )
    client = configure_mlflow(settings)

    _, run_id = TrainerRegistry(client, settings).log(
        event,
        spec,
        ts,
        fitted,
        Lineage(parent=None, labelled_until=None, train_seconds=0.1, window="file"),
    )
    profile = ReferenceProfile.model_validate(
        read_json_artifact(client, run_id, "data/reference_profile.json")
    )

    assert [f.name for f in profile.features] == ts.features
    assert profile.prediction is not None
    assert profile.label is not None
    assert (profile.prediction.name, profile.prediction.kind) == ("prediction", "categorical")
    assert (profile.label.name, profile.label.kind) == ("churned", "categorical")
    assert profile.label.categories == ["0", "1"]
    predicted = fitted.pipeline.predict(prepare(ts.frame, ts.features))
    share_of_1 = float(np.mean(predicted == 1))
    assert profile.prediction.proportions[profile.prediction.categories.index("1")] == share_of_1
