"""The rollout state machine: start, analysis of each stage, promotion, rollback, commands."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers import evaluation_passed

from driftloop.deployer.domain import rollout as machine
from driftloop.deployer.domain.rollout import Counters, Observation, Rollout, RolloutError, Stage
from driftloop.shared.events import (
    ApprovalRequired,
    Approved,
    Deployed,
    EvaluationPassed,
    RolledBack,
    RolloutAdvanced,
)
from driftloop.shared.routes import Routes, Served
from driftloop.shared.spec import ModelSpec

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
V1 = Served(version="1", run_id="run-1")


def spec(**deployer: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "model": "churn",
            "target": "churned",
            "deployer": {
                "shadow": {"rows": 100},
                "canary": {"steps": [10, 50, 100], "rows_per_step": 200, "min_labels": 20},
                **deployer,
            },
        }
    )


SPEC = spec()


def passed(version: str = "2", run_id: str = "run-2") -> EvaluationPassed:
    return evaluation_passed(version, run_id)


def seen(rows: int, errors: int = 0, **more: object) -> Observation:
    return Observation(challenger=Counters(rows=rows, errors=errors), **more)  # type: ignore[arg-type]


def started(model_spec: ModelSpec = SPEC) -> Rollout:
    return machine.start(passed(), V1, model_spec, now=NOW).rollout


def counted(rollout: Rollout, base: int = 0) -> Rollout:
    """The stage with its baseline taken (the first look after entering it)."""
    return replace(rollout, baseline=Counters(rows=base))


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


# Start ------------------------------------------------------------------------------------


def test_the_first_version_is_promoted_at_once() -> None:
    transition = machine.start(passed(), None, SPEC, now=NOW)

    assert transition.rollout.stage is Stage.PROMOTED
    advanced, deployed = transition.events
    assert isinstance(advanced, RolloutAdvanced)
    assert advanced.stage == "champion"
    assert isinstance(deployed, Deployed)
    assert deployed.previous_version is None
    routes = machine.routes_for(transition.rollout, None)
    assert routes.champion == Served(version="2", run_id="run-2")
    assert (routes.canary, routes.shadow, routes.revision) == (None, None, 1)


def test_a_release_over_a_champion_starts_in_shadow() -> None:
    transition = machine.start(passed(), V1, SPEC, now=NOW)

    assert transition.rollout.stage is Stage.SHADOW
    (advanced,) = transition.events
    assert isinstance(advanced, RolloutAdvanced)
    assert advanced.stage == "shadow"
    routes = machine.routes_for(transition.rollout, Routes(model="churn", champion=V1, revision=4))
    assert routes.champion == V1
    assert routes.shadow == Served(version="2", run_id="run-2")
    assert routes.canary is None
    assert routes.revision == 5
    assert routes.rollout is not None
    assert routes.rollout["state"] == "shadow"


def test_no_shadow_rows_and_no_steps_promotes_directly() -> None:
    direct = spec(shadow={"rows": 0}, canary={"steps": []})

    transition = machine.start(passed(), V1, direct, now=NOW)

    assert transition.rollout.stage is Stage.PROMOTED
    assert isinstance(transition.events[-1], Deployed)
    assert transition.events[-1].previous_version == "1"


def test_no_shadow_goes_to_the_first_canary_step() -> None:
    transition = machine.start(passed(), V1, spec(shadow={"rows": 0}), now=NOW)

    assert transition.rollout.stage is Stage.CANARY
    assert transition.rollout.weight == 10
    routes = machine.routes_for(transition.rollout, None)
    assert routes.canary is not None
    assert routes.canary.weight == 10


# Analysis ----------------------------------------------------------------------------------


def test_the_first_look_takes_the_baseline_and_holds() -> None:
    rollout = started()

    transition = machine.analyse(rollout, seen(rows=40), SPEC, now=later(1))

    assert transition is not None
    assert transition.rollout.baseline == Counters(rows=40)
    assert transition.events == []
    assert not transition.moves_routes


def test_a_stage_holds_until_its_rows() -> None:
    rollout = counted(started(), base=40)

    assert machine.analyse(rollout, seen(rows=139), SPEC, now=later(5)) is None


def test_shadow_passes_to_the_first_canary_step_with_its_checks() -> None:
    rollout = counted(started(), base=40)

    transition = machine.analyse(
        rollout,
        seen(
            rows=140,
            challenger_p95_ms=2.0,
            champion_p95_ms=1.5,
            challenger_requests=30,
            champion_requests=300,
        ),
        SPEC,
        now=later(5),
    )

    assert transition is not None
    assert transition.rollout.stage is Stage.CANARY
    assert (transition.rollout.step, transition.rollout.weight) == (0, 10)
    # The canary counts from this look: nothing served on it yet.
    assert transition.rollout.baseline == Counters()
    (advanced,) = transition.events
    assert isinstance(advanced, RolloutAdvanced)
    assert (advanced.stage, advanced.weight) == ("canary", 10)
    checks = {c.name: c for c in advanced.checks}
    assert checks["rows"].figure == 100
    assert checks["latency_p95_ratio"].figure == pytest.approx(2.0 / 1.5, rel=1e-3)
    assert all(c.passed for c in advanced.checks)


def test_manual_approval_waits_after_shadow() -> None:
    manual = spec(approval="manual")
    rollout = counted(started(manual))

    transition = machine.analyse(rollout, seen(rows=100), manual, now=later(5))

    assert transition is not None
    assert transition.rollout.stage is Stage.AWAITING_APPROVAL
    assert [type(e) for e in transition.events] == [RolloutAdvanced, ApprovalRequired]
    assert machine.analyse(transition.rollout, seen(rows=500), manual, now=later(60)) is None


def test_approval_starts_the_first_canary_step() -> None:
    manual = spec(approval="manual", shadow={"rows": 0})
    waiting = machine.start(passed(), V1, manual, now=NOW).rollout
    assert waiting.stage is Stage.AWAITING_APPROVAL

    transition = machine.approve(waiting, manual, now=later(30), actor="ana")

    assert transition.rollout.stage is Stage.CANARY
    assert transition.rollout.weight == 10
    approved = transition.events[0]
    assert isinstance(approved, Approved)
    assert approved.by == "ana"
    assert transition.audit[-1].actor == "ana"


def test_an_approval_that_never_comes_rolls_back() -> None:
    manual = spec(approval="manual", shadow={"rows": 0}, approval_timeout="1h")
    waiting = machine.start(passed(), V1, manual, now=NOW).rollout

    assert machine.analyse(waiting, None, manual, now=later(3599)) is None
    transition = machine.analyse(waiting, None, manual, now=later(3601))

    assert transition is not None
    assert transition.rollout.stage is Stage.ROLLED_BACK
    (rolled,) = transition.events
    assert isinstance(rolled, RolledBack)
    assert rolled.check is not None
    assert rolled.check.name == "approval_wait"
    assert rolled.restored_version == "1"


def test_approve_refuses_a_rollout_that_does_not_wait() -> None:
    with pytest.raises(RolloutError, match="not awaiting approval"):
        machine.approve(started(), SPEC, now=NOW, actor="ana")


def canary(step: int = 0, base: int = 0) -> Rollout:
    rollout = machine.start(passed(), V1, spec(shadow={"rows": 0}), now=NOW).rollout
    weight = SPEC.deployer.canary.steps[step]
    return replace(rollout, step=step, weight=weight, baseline=Counters(rows=base))


def test_errors_beyond_what_the_step_allows_roll_back_at_once() -> None:
    # 200 rows per step at 1 % may fail 2 rows; the third failure ends it early.
    transition = machine.analyse(canary(), seen(rows=30, errors=3), SPEC, now=later(2))

    assert transition is not None
    assert transition.rollout.stage is Stage.ROLLED_BACK
    (rolled,) = transition.events
    assert isinstance(rolled, RolledBack)
    assert rolled.check is not None
    assert rolled.check.name == "error_rate"
    assert rolled.check.figure == pytest.approx(0.1)
    assert rolled.restored_version == "1"
    assert rolled.restored_run_id == "run-1"
    routes = machine.routes_for(transition.rollout, None)
    assert routes.champion == V1
    assert routes.canary is None
    assert routes.shadow is None


def test_a_canary_step_waits_for_labels_then_compares_the_metric() -> None:
    rollout = canary()
    few = seen(rows=200, metric="accuracy", challenger_labels=5, champion_labels=500)

    reached = machine.analyse(rollout, few, SPEC, now=later(10))
    assert reached is not None
    assert reached.events == []
    waiting = reached.rollout
    assert machine.analyse(waiting, few, SPEC, now=later(30)) is None

    worse = seen(
        rows=210,
        metric="accuracy",
        challenger_metric=0.70,
        challenger_labels=60,
        champion_metric=0.80,
        champion_labels=500,
    )
    transition = machine.analyse(waiting, worse, SPEC, now=later(31))

    assert transition is not None
    assert transition.rollout.stage is Stage.ROLLED_BACK
    rolled = transition.events[0]
    assert isinstance(rolled, RolledBack)
    assert rolled.check is not None
    assert rolled.check.name == "accuracy_drop"
    assert rolled.check.figure == pytest.approx(0.10)
    assert rolled.check.threshold == pytest.approx(0.02)


def test_without_labels_the_step_is_judged_after_the_label_wait() -> None:
    reached = machine.analyse(canary(), seen(rows=200), SPEC, now=later(10))
    assert reached is not None

    transition = machine.analyse(reached.rollout, seen(rows=200), SPEC, now=later(71))

    assert transition is not None
    assert transition.rollout.stage is Stage.CANARY
    assert transition.rollout.weight == 50
    advanced = transition.events[0]
    assert isinstance(advanced, RolloutAdvanced)
    metric = next(c for c in advanced.checks if c.name.endswith("_drop"))
    assert metric.passed
    assert metric.figure is None
    assert "not compared" in metric.detail


def test_the_next_step_counts_from_the_look_that_started_it() -> None:
    reached = machine.analyse(canary(), seen(rows=200), SPEC, now=later(10))
    assert reached is not None
    at_the_look = seen(rows=230, routes={"canary": Counters(rows=230), "shadow": Counters(rows=9)})

    transition = machine.analyse(reached.rollout, at_the_look, SPEC, now=later(71))

    assert transition is not None
    assert transition.rollout.weight == 50
    # Rows the new weight serves before the next look count towards the new step.
    assert transition.rollout.baseline == Counters(rows=230)
    assert machine.analyse(transition.rollout, seen(rows=429), SPEC, now=later(72)) is None
    assert machine.analyse(transition.rollout, seen(rows=430), SPEC, now=later(72)) is not None


def test_lower_is_better_metrics_compare_the_other_way() -> None:
    rollout = replace(canary(), rows_reached_at=later(1))
    better = seen(
        rows=200,
        metric="rmse",
        challenger_metric=9.0,
        challenger_labels=100,
        champion_metric=10.0,
        champion_labels=100,
    )

    transition = machine.analyse(rollout, better, SPEC, now=later(2))

    assert transition is not None
    assert transition.rollout.weight == 50


def test_the_last_step_promotes() -> None:
    rollout = replace(canary(step=2, base=1000), rows_reached_at=later(1))
    good = seen(
        rows=1200,
        metric="accuracy",
        challenger_metric=0.85,
        challenger_labels=100,
        champion_metric=0.80,
        champion_labels=100,
    )

    transition = machine.analyse(rollout, good, SPEC, now=later(2))

    assert transition is not None
    assert transition.rollout.stage is Stage.PROMOTED
    advanced, deployed = transition.events
    assert isinstance(advanced, RolloutAdvanced)
    assert advanced.stage == "champion"
    assert isinstance(deployed, Deployed)
    assert deployed.previous_version == "1"
    routes = machine.routes_for(transition.rollout, None)
    assert routes.champion == Served(version="2", run_id="run-2")
    assert routes.canary is None


def test_disagreement_is_judged_only_when_bounded() -> None:
    bounded = spec(canary={"max_disagreement": 0.2})
    rollout = counted(started(bounded))
    split = Observation(challenger=Counters(rows=100, compared=100, disagreed=30))

    transition = machine.analyse(rollout, split, bounded, now=later(3))
    unbounded = machine.analyse(counted(started()), split, SPEC, now=later(3))

    assert transition is not None
    assert transition.rollout.stage is Stage.ROLLED_BACK
    assert unbounded is not None
    assert unbounded.rollout.stage is Stage.CANARY


def slow_shadow(challenger_requests: int) -> Any:
    """A shadow 20 times slower than the champion at p95, over `challenger_requests`."""
    return machine.analyse(
        counted(started()),
        seen(
            rows=100,
            challenger_p95_ms=40.0,
            champion_p95_ms=2.0,
            challenger_requests=challenger_requests,
            champion_requests=500,
        ),
        SPEC,
        now=later(3),
    )


@pytest.mark.parametrize(("requests", "stage"), [(25, Stage.ROLLED_BACK), (6, Stage.CANARY)])
def test_latency_far_above_the_champion_rolls_back_once_it_is_measured(
    requests: int, stage: Stage
) -> None:
    transition = slow_shadow(requests)

    assert transition is not None
    assert transition.rollout.stage is stage
    checks = transition.events[0].checks  # type: ignore[attr-defined]
    latency = next(c for c in checks if c.name == "latency_p95_ratio")
    assert latency.passed is (requests < 20)
    if requests < 20:  # a p95 over six requests is their slowest one: not judged
        assert latency.figure is None
        assert "6 and 500 requests" in latency.detail
    else:
        assert latency.figure == pytest.approx(20.0)


# Commands -----------------------------------------------------------------------------------


def test_a_paused_rollout_neither_advances_nor_rolls_back() -> None:
    paused = machine.pause(canary(), now=later(1), actor="ana", paused=True).rollout

    assert machine.analyse(paused, seen(rows=1000, errors=500), SPEC, now=later(2)) is None
    resumed = machine.pause(paused, now=later(3), actor="ana", paused=False)
    assert not resumed.rollout.paused
    advanced = resumed.events[0]
    assert isinstance(advanced, RolloutAdvanced)
    assert advanced.by == "ana"
    assert machine.analyse(resumed.rollout, seen(rows=1000, errors=500), SPEC, now=later(4))


def test_pausing_twice_is_refused() -> None:
    paused = machine.pause(canary(), now=NOW, actor="ana", paused=True).rollout

    with pytest.raises(RolloutError, match="already paused"):
        machine.pause(paused, now=NOW, actor="ana", paused=True)


@pytest.mark.parametrize("stage", [Stage.SHADOW, Stage.AWAITING_APPROVAL, Stage.CANARY])
def test_a_person_can_roll_back_from_every_running_stage(stage: Stage) -> None:
    rollout = replace(canary(), stage=stage, paused=stage is Stage.CANARY)

    transition = machine.roll_back(rollout, now=later(1), actor="ana", reason="looks wrong")

    assert transition.rollout.stage is Stage.ROLLED_BACK
    assert not transition.rollout.paused
    (rolled,) = transition.events
    assert isinstance(rolled, RolledBack)
    assert (rolled.by, rolled.reason, rolled.restored_version) == ("ana", "looks wrong", "1")
    (entry,) = transition.audit
    assert (entry.actor, entry.to_stage) == ("ana", "rolled_back")


def test_restore_makes_an_earlier_version_champion_again() -> None:
    transition = machine.restore(
        Served(version="3", run_id="run-3"),
        V1,
        model="churn",
        cycle_id="rollback-1",
        now=NOW,
        actor="ana",
        reason="bad week",
    )

    (rolled,) = transition.events
    assert isinstance(rolled, RolledBack)
    assert (rolled.version, rolled.restored_version, rolled.restored_run_id) == ("3", "1", "run-1")
    assert machine.routes_for(transition.rollout, None).champion == V1
    assert transition.audit[0].from_stage == "champion 3"


def test_release_promotes_a_named_version_as_its_own_cycle() -> None:
    transition = machine.release(
        V1,
        Served(version="4", run_id="run-4"),
        model="churn",
        cycle_id="promote-1",
        now=NOW,
        actor="ana",
        reason="hotfix",
    )

    deployed = transition.events[-1]
    assert isinstance(deployed, Deployed)
    assert (deployed.version, deployed.previous_version, deployed.cycle_id) == (
        "4",
        "1",
        "promote-1",
    )
    assert transition.audit[0].from_stage == "champion 1"


# A champion shown degraded ------------------------------------------------------------------


def degraded_passed() -> EvaluationPassed:
    return passed().model_copy(update={"champion_degraded": True})


def walk(rollout: Rollout, model_spec: ModelSpec) -> list[int | str]:
    """Pass every stage with good figures; the weights the canary went through, then how it
    ended."""
    weights: list[int | str] = []
    rows, at = 0, 1.0
    while rollout.running:
        rollout = replace(rollout, baseline=Counters(rows=rows), rows_reached_at=later(at))
        rows += model_spec.deployer.canary.rows_per_step + model_spec.deployer.shadow.rows
        good = seen(
            rows=rows,
            metric="accuracy",
            challenger_metric=0.85,
            challenger_labels=100,
            champion_metric=0.80,
            champion_labels=100,
        )
        moved = machine.analyse(rollout, good, model_spec, now=later(at + 1))
        assert moved is not None
        rollout, at = moved.rollout, at + 2
        if rollout.stage is Stage.CANARY:
            weights.append(rollout.weight)
    return [*weights, rollout.stage.value]


def test_a_release_over_a_degraded_champion_runs_the_degraded_steps() -> None:
    transition = machine.start(degraded_passed(), V1, SPEC, now=NOW)

    assert transition.rollout.degraded
    assert transition.rollout.summary()["degraded"] is True
    assert walk(transition.rollout, SPEC) == [50, 100, "promoted"]


def test_a_release_over_a_champion_not_shown_degraded_runs_the_steps() -> None:
    transition = machine.start(passed(), V1, SPEC, now=NOW)

    assert not transition.rollout.degraded
    assert walk(transition.rollout, SPEC) == [10, 50, 100, "promoted"]


@pytest.mark.parametrize(
    ("steps", "degraded_steps", "expected"),
    [
        ([10, 50, 100], None, [50, 100, "promoted"]),
        ([], None, ["promoted"]),
        ([5, 10, 20], None, [20, "promoted"]),
        ([25, 75], None, [75, "promoted"]),
        ([10, 50, 100], [10, 50, 100], [10, 50, 100, "promoted"]),
        ([10, 50, 100], [], ["promoted"]),
        ([10, 50, 100], [25, 100], [25, 100, "promoted"]),
    ],
    ids=["default", "no-steps", "all-low", "from-50", "kept", "none", "custom"],
)
def test_the_degraded_steps_are_the_specs_or_its_steps_from_50_percent_on(
    steps: list[int], degraded_steps: list[int] | None, expected: list[int | str]
) -> None:
    model_spec = spec(
        canary={
            "steps": steps,
            "rows_per_step": 200,
            "min_labels": 20,
            "degraded_steps": degraded_steps,
        }
    )

    rollout = machine.start(degraded_passed(), V1, model_spec, now=NOW).rollout

    assert walk(rollout, model_spec) == expected


def test_degraded_steps_must_increase() -> None:
    with pytest.raises(ValueError, match="degraded_steps must increase"):
        spec(canary={"degraded_steps": [50, 50]})


def test_the_champion_is_judged_over_the_stage_while_it_answers_a_part_of_it() -> None:
    """A drifting stream's metric moves between stages: the champion's figure is taken over
    the canary's own stage while it still answers some of it, and over the rollout at 100 %."""
    shadow = started()
    assert shadow.stage is Stage.SHADOW
    assert machine.champion_since(shadow) == NOW
    stage = later(180)
    canary = replace(shadow, stage=Stage.CANARY, weight=50, stage_started_at=stage)
    assert machine.champion_since(canary) == stage
    assert machine.champion_since(replace(canary, weight=10)) == stage
    assert machine.champion_since(replace(canary, weight=100)) == NOW  # it answers none then
