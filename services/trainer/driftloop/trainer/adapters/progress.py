"""What the trainer is waiting for, for its status request (`driftloop status`, the CLI's wait
for a cycle).

Kept in the process's memory: a waiting retraining re-counts its labels every poll and writes
its line here, so after a restart the line is back within one poll. With several trainer
replicas each answers for the cycles it holds; the CLI asks once and shows what it is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from driftloop.trainer.domain.regime import LabelWait

STATUS_SUBJECT = "driftloop.rpc.trainer.status"
"""Request {"model"?: str} -> {"waiting": [{model, cycle_id, progress, at, ...figures}]}."""


@dataclass(frozen=True)
class Waiting:
    model: str
    cycle_id: str
    wait: LabelWait
    at: datetime  # when the labels were last counted

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cycle_id": self.cycle_id,
            "progress": self.wait.progress(),
            "at": self.at.isoformat(),
            **self.wait.report(),
        }


class WaitBoard:
    """The retrainings of this process that wait for labels, by cycle."""

    def __init__(self) -> None:
        self._waiting: dict[str, Waiting] = {}

    def waiting(self, model: str, cycle_id: str, wait: LabelWait, *, at: datetime) -> None:
        self._waiting[cycle_id] = Waiting(model, cycle_id, wait, at)

    def done(self, cycle_id: str) -> None:
        self._waiting.pop(cycle_id, None)

    def status(
        self, model: str | None = None, *, now: datetime, max_age: timedelta
    ) -> dict[str, Any]:
        """The waits of `model` (every model's when None) counted within `max_age`: an older
        line belongs to a cycle no longer polled (ended elsewhere or given up on)."""
        for stale in [c for c, w in self._waiting.items() if now - w.at > max_age]:
            del self._waiting[stale]
        return {
            "waiting": [w.as_json() for w in self._waiting.values() if model in (None, "", w.model)]
        }
