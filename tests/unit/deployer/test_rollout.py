"""Planning a release once its evaluation passed: this version promotes at once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from driftloop.deployer.domain.rollout import Stage, plan
from driftloop.shared.events import Deployed, EvaluationPassed, RolloutAdvanced
from driftloop.shared.routes import CanaryRoute, Routes, Served
from driftloop.shared.spec import ModelSpec

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SPEC = ModelSpec(model="churn", target="churned")
V1 = Served(version="1", run_id="run-1")


def passed(version: str = "2", run_id: str = "run-2") -> EvaluationPassed:
    return EvaluationPassed(
        model="churn",
        cycle_id="cycle-7",
        version=version,
        run_id=run_id,
        champion_version="1",
        metric="f1",
        challenger_score=0.9,
        champion_score=0.8,
        checks=[],
        reason="better",
    )


def test_promotion_makes_the_version_champion_and_clears_other_routes() -> None:
    current = Routes(
        model="churn",
        champion=V1,
        canary=CanaryRoute(version="2", run_id="run-2", weight=10),
        shadow=Served(version="2", run_id="run-2"),
        revision=4,
    )

    transition = plan(passed(), current, V1, SPEC, now=NOW)

    routes = transition.routes
    assert routes.model == "churn"
    assert routes.champion == Served(version="2", run_id="run-2")
    assert routes.canary is None
    assert routes.shadow is None
    assert routes.updated_at == NOW
    assert routes.rollout is not None
    assert routes.rollout["state"] == "promoted"
    assert routes.rollout["version"] == "2"
    assert routes.rollout["cycle_id"] == "cycle-7"
    assert transition.rollout.stage is Stage.PROMOTED
    assert transition.rollout.weight == 100


@pytest.mark.parametrize(
    ("current", "revision"),
    [(None, 1), (Routes(model="churn"), 1), (Routes(model="churn", champion=V1, revision=41), 42)],
    ids=["no-routes-yet", "empty-routes", "existing-routes"],
)
def test_revision_increments_from_the_current_routes(current: Routes | None, revision: int) -> None:
    transition = plan(passed(), current, None, SPEC, now=NOW)

    assert transition.routes.revision == revision


def test_events_are_rollout_advanced_then_deployed() -> None:
    current = Routes(model="churn", champion=V1, revision=1)

    transition = plan(passed(), current, V1, SPEC, now=NOW)

    advanced, deployed = transition.events
    assert isinstance(advanced, RolloutAdvanced)
    assert isinstance(deployed, Deployed)
    assert (advanced.model, advanced.cycle_id, advanced.version) == ("churn", "cycle-7", "2")
    assert (advanced.stage, advanced.weight) == ("champion", 100)
    assert (deployed.model, deployed.cycle_id, deployed.version) == ("churn", "cycle-7", "2")
    assert deployed.run_id == "run-2"


@pytest.mark.parametrize(
    ("previous", "expected"),
    [(V1, "1"), (None, None), (Served(version="2", run_id="run-2"), None)],
    ids=["replaces-previous", "no-previous", "previous-is-the-same-version"],
)
def test_deployed_names_the_previous_version_from_previous(
    previous: Served | None, expected: str | None
) -> None:
    # `previous` (the deployer's release log) decides, not the current routes.
    current = Routes(model="churn", champion=Served(version="9", run_id="run-9"), revision=3)

    transition = plan(passed(), current, previous, SPEC, now=NOW)

    deployed = transition.events[-1]
    assert isinstance(deployed, Deployed)
    assert deployed.previous_version == expected
    assert transition.rollout.previous == previous
