"""The rollout state machine: one pure function from (rollout, observation, spec) to a
transition (the new state, the routes to publish, the events to emit).

States: shadow -> awaiting_approval? -> canary(step i) -> promoted, or rolled_back from any
running state. This version of the deployer plans every release as an immediate promotion
(`plan` below); shadow and canary stages plug into `next_state` without changing callers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from driftloop.shared.events import Deployed, EvaluationPassed, Event, RolloutAdvanced
from driftloop.shared.routes import Routes, Served
from driftloop.shared.spec import ModelSpec


class Stage(StrEnum):
    SHADOW = "shadow"
    AWAITING_APPROVAL = "awaiting_approval"
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


TERMINAL = frozenset({Stage.PROMOTED, Stage.ROLLED_BACK})


@dataclass(frozen=True)
class Rollout:
    model: str
    cycle_id: str
    version: str
    run_id: str
    previous: Served | None
    stage: Stage
    step: int = 0
    weight: int = 0
    updated_at: datetime | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "state": self.stage.value,
            "cycle_id": self.cycle_id,
            "version": self.version,
            "step": self.step,
            "weight": self.weight,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True)
class Transition:
    rollout: Rollout
    routes: Routes
    events: list[Event] = field(default_factory=list)


def plan(
    passed: EvaluationPassed,
    current: Routes | None,
    previous: Served | None,
    spec: ModelSpec,
    *,
    now: datetime,
) -> Transition:
    """The first transition of a release once its evaluation passed.

    `previous` is the champion this release replaces (from the deployer's own release log,
    so a redelivered event still names the right one). With nothing serving yet the version
    is promoted at once (nothing to compare against live); staged rollouts (shadow, canary,
    approval from `spec.deployer`) are issue 6 and enter here.
    """
    del spec  # used once staged rollouts land
    rollout = Rollout(
        model=passed.model,
        cycle_id=passed.cycle_id,
        version=passed.version,
        run_id=passed.run_id,
        previous=previous,
        stage=Stage.PROMOTED,
        weight=100,
        updated_at=now,
    )
    return promote(rollout, current, now=now)


def promote(rollout: Rollout, current: Routes | None, *, now: datetime) -> Transition:
    done = replace(rollout, stage=Stage.PROMOTED, weight=100, updated_at=now)
    routes = Routes(
        model=rollout.model,
        champion=Served(version=rollout.version, run_id=rollout.run_id),
        canary=None,
        shadow=None,
        revision=(current.revision + 1) if current else 1,
        rollout=done.summary(),
        updated_at=now,
    )
    previous = rollout.previous.version if rollout.previous else None
    events: list[Event] = [
        RolloutAdvanced(
            model=rollout.model,
            cycle_id=rollout.cycle_id,
            version=rollout.version,
            stage="champion",
            weight=100,
        ),
        Deployed(
            model=rollout.model,
            cycle_id=rollout.cycle_id,
            version=rollout.version,
            previous_version=previous if previous != rollout.version else None,
            run_id=rollout.run_id,
        ),
    ]
    return Transition(done, routes, events)
