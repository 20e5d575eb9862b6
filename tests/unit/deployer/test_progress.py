"""The progress deadline: a stage that does not move on within `deployer.progress_deadline`
of its last move is rolled back (or paused); inconclusive looks never pass a stage."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from helpers import evaluation_passed

from driftloop.deployer.domain import progress
from driftloop.deployer.domain import rollout as machine
from driftloop.deployer.domain.rollout import Counters, Observation, Rollout, Stage
from driftloop.shared.events import RolledBack, RolloutAdvanced
from driftloop.shared.routes import Served
from driftloop.shared.spec import ModelSpec

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
V1 = Served(version="1", run_id="run-1")
DEADLINE = 600.0  # seconds


def spec(**deployer: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "model": "churn",
            "target": "churned",
            "deployer": {
                "shadow": {"rows": 0},
                "canary": {"steps": [10, 50, 100], "rows_per_step": 200, "min_labels": 20},
                "progress_deadline": f"{DEADLINE:g}s",
                **deployer,
            },
        }
    )


SPEC = spec()


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def canary(model_spec: ModelSpec = SPEC, base: int = 0) -> Rollout:
    """In the first canary step since NOW, its baseline taken."""
    rollout = machine.start(evaluation_passed(), V1, model_spec, now=NOW).rollout
    assert (rollout.stage, rollout.weight) == (Stage.CANARY, 10)
    return replace(rollout, baseline=Counters(rows=base))


def seen(rows: int) -> Observation:
    return Observation(challenger=Counters(rows=rows))


def test_the_default_deadline_is_an_hour_and_rolls_back() -> None:
    default = ModelSpec.model_validate({"model": "churn", "target": "churned"}).deployer

    assert default.progress_deadline == timedelta(hours=1)
    assert default.progress_deadline_action == "rollback"


def test_a_canary_without_traffic_is_rolled_back_past_the_deadline_with_the_reason() -> None:
    rollout = canary()

    assert progress.look(rollout, seen(0), SPEC, now=later(DEADLINE)) is None
    transition = progress.look(rollout, seen(0), SPEC, now=later(DEADLINE + 1))

    assert transition is not None
    assert transition.rollout.stage is Stage.ROLLED_BACK
    (rolled,) = transition.events
    assert isinstance(rolled, RolledBack)
    assert rolled.reason == "no progress for 601 s: canary 10%: 0 of 200 rows answered"
    assert rolled.check is not None
    assert (rolled.check.name, rolled.check.passed) == ("progress_deadline", False)
    assert (rolled.check.figure, rolled.check.threshold) == (601.0, DEADLINE)
    assert rolled.restored_version == "1"
    assert machine.routes_for(transition.rollout, None).canary is None


def test_a_deadline_passed_by_a_fraction_of_a_millisecond_shows_a_figure_past_it() -> None:
    transition = progress.look(canary(), seen(0), SPEC, now=later(DEADLINE + 0.0002))

    assert transition is not None
    (rolled,) = transition.events
    assert isinstance(rolled, RolledBack)
    assert rolled.check is not None
    assert rolled.check.figure > rolled.check.threshold == DEADLINE  # 600.001 > 600


def test_the_pause_action_pauses_with_the_reason_and_a_resume_restarts_the_clock() -> None:
    pausing = spec(progress_deadline_action="pause")
    rollout = canary(pausing)

    transition = progress.look(rollout, seen(30), pausing, now=later(DEADLINE + 1))

    assert transition is not None
    paused = transition.rollout
    assert (paused.stage, paused.weight, paused.paused) == (Stage.CANARY, 10, True)
    assert paused.reason == "no progress for 601 s: canary 10%: 30 of 200 rows answered"
    (advanced,) = transition.events
    assert isinstance(advanced, RolloutAdvanced)
    assert (advanced.paused, advanced.by, advanced.reason) == (True, "deployer", paused.reason)
    assert [c.name for c in advanced.checks] == ["progress_deadline"]
    assert machine.routes_for(paused, None).canary is not None  # the routes stay
    assert progress.look(paused, seen(30), pausing, now=later(5 * DEADLINE)) is None
    resumed = machine.pause(paused, now=later(5 * DEADLINE), actor="ana", paused=False).rollout
    assert progress.look(resumed, seen(30), pausing, now=later(6 * DEADLINE)) is None
    assert progress.look(resumed, seen(30), pausing, now=later(6 * DEADLINE + 1)) is not None


@pytest.mark.parametrize(
    ("observation", "unanswered", "waiting"),
    [
        (None, "nats: no responders available for request", "the monitor did not answer"),
        (None, None, "no figures from the monitor"),
        (seen(0), None, "0 of 200 rows answered"),
        (seen(199), None, "199 of 200 rows answered"),
        (seen(-50), None, "counters are behind the stage's start by 50 rows"),
    ],
    ids=["no-answer", "no-figures", "no-rows", "too-few-rows", "monitor-restarted"],
)
def test_an_inconclusive_look_never_passes_and_ends_at_the_deadline(
    observation: Observation | None, unanswered: str | None, waiting: str
) -> None:
    rollout = canary() if observation is not None else replace(canary(), baseline=None)
    looks = [
        progress.look(rollout, observation, SPEC, now=later(s), unanswered=unanswered)
        for s in (1, 60, 300, DEADLINE)
    ]

    ended = progress.look(
        rollout, observation, SPEC, now=later(DEADLINE + 1), unanswered=unanswered
    )

    assert all(t is None or not t.audit for t in looks)  # held: at most bookkeeping
    assert ended is not None
    assert ended.rollout.stage is Stage.ROLLED_BACK  # never the next step
    (rolled,) = ended.events
    assert isinstance(rolled, RolledBack)
    assert rolled.reason.startswith("no progress for 601 s: canary 10%: ")
    assert waiting in rolled.reason


def test_bookkeeping_does_not_restart_the_clock() -> None:
    first = progress.look(replace(canary(), baseline=None), seen(40), SPEC, now=later(500))
    assert first is not None
    assert first.rollout.baseline == Counters(rows=40)
    assert first.rollout.updated_at == NOW

    ended = progress.look(first.rollout, seen(100), SPEC, now=later(DEADLINE + 1))

    assert ended is not None
    assert ended.rollout.stage is Stage.ROLLED_BACK


def test_a_look_that_passes_the_stage_past_the_deadline_moves_on() -> None:
    rollout = replace(canary(), rows_reached_at=later(1))  # the deployer was down meanwhile

    transition = progress.look(rollout, seen(200), SPEC, now=later(10 * DEADLINE))

    assert transition is not None
    assert (transition.rollout.stage, transition.rollout.weight) == (Stage.CANARY, 50)
    assert transition.rollout.updated_at == later(10 * DEADLINE)  # the next step's clock
    held = progress.look(transition.rollout, seen(200), SPEC, now=later(11 * DEADLINE))
    assert held is None or not held.audit


def test_a_stage_that_reached_its_rows_is_given_its_label_wait() -> None:
    reached = progress.look(canary(), seen(200), SPEC, now=later(DEADLINE - 1))
    assert reached is not None
    assert reached.rollout.rows_reached_at == later(DEADLINE - 1)

    # The monitor stops answering while the step waits for its labels (label_wait 60 s).
    waiting = progress.look(reached.rollout, None, SPEC, now=later(DEADLINE + 58), unanswered="x")
    ended = progress.look(reached.rollout, None, SPEC, now=later(DEADLINE + 59), unanswered="x")

    assert waiting is None
    assert ended is not None
    assert ended.rollout.stage is Stage.ROLLED_BACK
    assert "the monitor did not answer (x)" in ended.rollout.reason


def test_no_deadline_holds_forever() -> None:
    off = spec(progress_deadline=None)

    assert progress.look(canary(off), seen(0), off, now=later(1e7)) is None


def test_awaiting_approval_keeps_its_own_timeout() -> None:
    manual = spec(approval="manual", approval_timeout="1h")
    waiting = machine.start(evaluation_passed(), V1, manual, now=NOW).rollout
    assert waiting.stage is Stage.AWAITING_APPROVAL

    assert progress.look(waiting, None, manual, now=later(3599)) is None
    timed_out = progress.look(waiting, None, manual, now=later(3601))

    assert timed_out is not None
    assert timed_out.events[0].check.name == "approval_wait"  # type: ignore[attr-defined]


def test_a_step_holding_for_a_surer_metric_says_so_at_the_deadline() -> None:
    """A drop the labels cannot tell from max_metric_drop holds the step; past the deadline its
    reason names that, not missing labels."""
    noisy = Observation(
        challenger=Counters(rows=250),
        metric="accuracy",
        challenger_metric=0.78,
        challenger_labels=200,
        champion_metric=0.80,
        champion_labels=1000,
        challenger_metric_se=0.03,
        champion_metric_se=0.013,
    )
    rollout = replace(canary(), rows_reached_at=NOW)
    assert progress.look(rollout, noisy, SPEC, now=later(DEADLINE)) is None  # held

    transition = progress.look(rollout, noisy, SPEC, now=later(DEADLINE + 1))

    assert transition is not None
    assert transition.rollout.stage is Stage.ROLLED_BACK
    (rolled,) = transition.events
    assert isinstance(rolled, RolledBack)
    assert "accuracy drop on 200 labelled rows is within noise of max_metric_drop 0.02" in (
        rolled.reason
    )
