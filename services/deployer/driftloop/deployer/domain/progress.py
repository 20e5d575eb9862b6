"""The progress deadline of a rollout (Argo Rollouts' progressDeadlineSeconds): one look at a
running rollout is the analysis (`rollout.analyse`), then, when that did not move it, the
deadline.

Progress is a move of the stage: it passed (the next step, approval, promotion) or failed
(rolled back). The clock counts from the rollout's last move (`Rollout.updated_at`: the
stage's start, or a pause or resume), never from bookkeeping (the stage's baseline, the
moment its rows were reached). A look that cannot judge the stage is inconclusive and holds
it: no answer from the monitor, an answer without the stage's figures, fewer rows than the
stage needs, counters behind the stage's baseline (a monitor that restarted). Inconclusive
never passes a stage and never restarts the clock, so a canary whose traffic stopped, or
whose monitor answers nothing, ends `deployer.progress_deadline` after its last move:
rolled back (RolledBack, check `progress_deadline`) or paused
(`deployer.progress_deadline_action`), its reason "no progress for N s: <what it waited
for>". A stage that reached its rows is judged once its labels came or `canary.label_wait`
passed, so it is given that wait even past the deadline.

Awaiting approval has its own bound (`approval_timeout`); a paused rollout waits for a
person (its clock restarts when resumed).
"""

from __future__ import annotations

import math
from datetime import datetime

from driftloop.deployer.domain.rollout import (
    Observation,
    Rollout,
    Stage,
    Transition,
    analyse,
    labelled,
    pause,
    roll_back,
)
from driftloop.shared.events import CheckResult
from driftloop.shared.spec import ModelSpec

DEADLINE_CHECK = "progress_deadline"


def look(
    rollout: Rollout,
    seen: Observation | None,
    spec: ModelSpec,
    *,
    now: datetime,
    unanswered: str | None = None,
) -> Transition | None:
    """One look at a running rollout: the analysis's move when it makes one; else, past the
    deadline, the deadline's; else the analysis's bookkeeping, or None to hold.

    `seen` is None when the monitor gave no figures; `unanswered` then says why (its error),
    for the reason of a deadline that passes meanwhile.
    """
    analysed = analyse(rollout, None if unanswered else seen, spec, now=now)
    if analysed is not None and analysed.audit:
        return analysed
    held = analysed.rollout if analysed is not None else rollout
    return overdue(held, seen, spec, now=now, unanswered=unanswered) or analysed


def overdue(
    rollout: Rollout,
    seen: Observation | None,
    spec: ModelSpec,
    *,
    now: datetime,
    unanswered: str | None = None,
) -> Transition | None:
    """The deadline's transition (roll back or pause) when a running shadow or canary stage
    has gone without progress for longer than `deployer.progress_deadline`; else None."""
    deployer = spec.deployer
    deadline = deployer.progress_deadline
    if deadline is None or rollout.route is None or rollout.paused:
        return None
    waited = now - rollout.updated_at
    if waited <= deadline:
        return None
    reached = rollout.rows_reached_at
    if reached is not None and now - reached < deployer.canary.label_wait:
        return None  # judged once the labels come or label_wait passes: a move is due
    detail = waiting_for(rollout, seen, spec, unanswered=unanswered)
    seconds = waited.total_seconds()
    check = CheckResult(
        name=DEADLINE_CHECK,
        # to the millisecond, rounded up: a deadline passed by a fraction of one still shows
        # a figure past the threshold (rounding it to the nearest made them equal)
        figure=math.ceil(seconds * 1000) / 1000,
        threshold=deadline.total_seconds(),
        passed=False,
        detail=detail,
    )
    reason = f"no progress for {seconds:.0f} s: {detail}"
    if deployer.progress_deadline_action == "pause":
        return pause(rollout, now=now, actor="deployer", paused=True, reason=reason, checks=[check])
    return roll_back(rollout, now=now, actor="deployer", reason=reason, failed=check)


def waiting_for(
    rollout: Rollout, seen: Observation | None, spec: ModelSpec, *, unanswered: str | None
) -> str:
    """What the stage is waiting for, in words: the monitor, rows, or labels."""
    where = f"canary {rollout.weight}%" if rollout.stage is Stage.CANARY else rollout.stage.value
    if unanswered:
        return f"{where}: the monitor did not answer ({unanswered})"
    if seen is None or rollout.baseline is None:
        return f"{where}: no figures from the monitor"
    needed = (
        spec.deployer.shadow.rows
        if rollout.stage is Stage.SHADOW
        else spec.deployer.canary.rows_per_step
    )
    rows = seen.challenger.since(rollout.baseline).rows
    if rows < 0:
        return (
            f"{where}: the monitor's counters are behind the stage's start by {-rows} rows "
            "(did it restart?)"
        )
    if rows < needed:
        return f"{where}: {rows} of {needed} rows answered"
    canary = spec.deployer.canary
    compared = seen.challenger_metric is not None and seen.champion_metric is not None
    if compared and labelled(seen, canary):  # and held: the drop is within noise
        return (
            f"{where}: {rows} rows answered; the {seen.metric} drop on "
            f"{seen.challenger_labels} labelled rows is within noise of max_metric_drop "
            f"{canary.max_metric_drop:g} (canary.metric_confidence), waiting for more labels"
        )
    return f"{where}: {rows} rows answered, waiting for their labels"
