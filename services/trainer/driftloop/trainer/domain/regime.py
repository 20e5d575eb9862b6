"""Training on the new regime: how many labelled rows from after a drift episode's onset a
retraining waits for, and where the wait stands (docs/decisions.md, "Training on the new
regime")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from driftloop.shared.spec import TrainerSpec


def rows_needed(trainer: TrainerSpec, *, onset: datetime | None) -> int:
    """Labelled rows a retraining needs before it trains.

    Without an onset: `min_rows` rows labelled since the champion's training set. With one:
    rows served at or after the onset, enough that the holdout (`holdout` of them) holds
    `onset_holdout_rows` rows: max(min_rows, ceil(onset_holdout_rows / holdout)), and never
    more than `max_rows` (the training set takes no more recent rows than that).
    """
    if onset is None:
        return trainer.min_rows
    for_holdout = math.ceil(round(trainer.onset_holdout_rows / trainer.holdout, 9))
    return min(trainer.max_rows, max(trainer.min_rows, for_holdout))


Outcome = Literal["train", "wait", "fail"]


@dataclass(frozen=True)
class LabelWait:
    """Where a retraining waiting for labels stands: `have` of `needed` rows (served after
    `onset` when there is one), after waiting `waited` of at most `limit`."""

    have: int
    needed: int
    onset: datetime | None
    waited: timedelta
    limit: timedelta

    @property
    def outcome(self) -> Outcome:
        """Train once enough rows are there; past the limit with fewer, fail; else wait."""
        if self.have >= self.needed:
            return "train"
        return "fail" if self.waited > self.limit else "wait"

    def progress(self) -> str:
        """One line for people: `waiting for labels after the onset <time>: 812/2500`."""
        if self.onset is None:
            return f"waiting for labels: {self.have}/{self.needed} new labelled rows"
        return (
            f"waiting for labels after the onset {self.onset.isoformat(timespec='seconds')}: "
            f"{self.have}/{self.needed}"
        )

    def failure(self) -> str:
        """The reason of TrainingFailed when the wait ran out."""
        if self.onset is None:
            return (
                f"only {self.have} new labelled rows after waiting {self.waited}; "
                f"min_rows is {self.needed}"
            )
        return (
            f"only {self.have} labelled rows served after the onset "
            f"{self.onset.isoformat(timespec='seconds')} after waiting {self.waited} "
            f"(trainer.label_wait {self.limit}); {self.needed} needed "
            "(max(min_rows, ceil(onset_holdout_rows / holdout)), at most max_rows)"
        )

    def report(self) -> dict[str, Any]:
        """The figures, for TrainingFailed's report and the trainer's status."""
        return {
            "labelled_rows": self.have,
            "needed": self.needed,
            "onset": self.onset.isoformat() if self.onset else None,
            "waited_seconds": round(self.waited.total_seconds(), 1),
            "label_wait_seconds": self.limit.total_seconds(),
        }
