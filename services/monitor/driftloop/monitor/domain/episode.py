"""Episodes: a drift or performance condition that persists, from its first window to the
window that clears it (or a deployment). Pure.

An episode knows when the change began (its `start`, the onset the trainer waits past), how
many windows it has lasted, the last DriftDetected/PerformanceDegraded it emitted (events are
folded: the first window's and then one every `monitor.event_every` windows), the cycle it
started last and the attempts that failed. A retry waits for evidence (labels), not the clock:
`labels_for_retry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from driftloop.shared.events import AdaptationStalled, Attempt

EpisodeKind = Literal["drift", "performance"]
KINDS: tuple[EpisodeKind, ...] = ("drift", "performance")


@dataclass(frozen=True)
class Episode:
    """One persisting condition of the champion."""

    kind: EpisodeKind
    start: datetime  # the onset: start of the first drifted (degraded) window
    windows: int = 1  # drifted windows (degraded evaluations) so far
    event_id: str | None = None  # the last DriftDetected / PerformanceDegraded emitted
    cycle_id: str | None = None  # the last cycle this episode started
    attempts: tuple[Attempt, ...] = ()  # the failed ones, oldest first
    stalled: bool = False  # AdaptationStalled was emitted (once per episode)

    @property
    def failed(self) -> int:
        return len(self.attempts)


@dataclass(frozen=True)
class Observation:
    """What one judged window does to an episode: the episode after it (None: none open) and
    whether this window emits its event."""

    episode: Episode | None
    report: bool


def observe(
    episode: Episode | None, kind: EpisodeKind, *, holds: bool, start: datetime, every: int
) -> Observation:
    """A window was judged: the condition `holds` (drifted, below the floor) or not. The
    first window that holds opens an episode starting at `start` and reports; later ones
    report every `every` windows (the 1st, the every+1-th, ...); one that does not hold
    closes the episode."""
    if not holds:
        return Observation(None, False)
    if episode is None:
        return Observation(Episode(kind, start), True)
    windows = episode.windows + 1
    return Observation(replace(episode, windows=windows), (windows - 1) % every == 0)


def labels_for_retry(failed: int, retry_labels: int) -> int:
    """Labels to wait for, since the last failed attempt started, before attempt `failed`+1:
    `retry_labels`, doubling with each failed attempt (1000, 2000, 4000, ...)."""
    return int(retry_labels * 2 ** max(failed - 1, 0))


def record_failure(episode: Episode, attempt: Attempt) -> Episode:
    """The episode's cycle ended without a deployment: one more failed attempt (a cycle is
    recorded once, however often its end is delivered)."""
    if any(a.cycle_id == attempt.cycle_id for a in episode.attempts):
        return episode
    return replace(episode, attempts=(*episode.attempts, attempt))


def stall_due(episode: Episode, stall_after: int) -> bool:
    """Whether the episode has just reached `stall_after` failed attempts unreported."""
    return not episode.stalled and episode.failed >= stall_after


@dataclass(frozen=True)
class Failure:
    """A failed cycle recorded: the episodes after it, and the episode that has just stalled
    (emit AdaptationStalled for it), if one did."""

    episodes: Episodes
    stalled: Episode | None


def cycle_failed(
    episodes: Episodes,
    cycle_id: str,
    *,
    outcome: str,
    reason: str,
    at: datetime,
    stall_after: int,
) -> Failure | None:
    """Cycle `cycle_id` ended without a deployment (`outcome`: the event that ended it): one
    failed attempt of the open episode that started it (None when none did: a manual cycle,
    or the condition cleared meanwhile); at `stall_after` failed attempts the episode stalls,
    once."""
    episode = episodes.of_cycle(cycle_id)
    if episode is None:
        return None
    attempt = Attempt(
        cycle_id=cycle_id, trigger=episode.kind, outcome=outcome, reason=reason, at=at
    )
    episode = record_failure(episode, attempt)
    due = stall_due(episode, stall_after)
    if due:
        episode = replace(episode, stalled=True)
    return Failure(episodes.put(episode.kind, episode), episode if due else None)


def stalled_event(
    model: str,
    episode: Episode,
    *,
    metric: str | None = None,
    figure: float | None = None,
    threshold: float | None = None,
) -> AdaptationStalled:
    """AdaptationStalled for an episode: every failed attempt and why, with the live metric
    against its floor when known."""
    tried = "; ".join(f"{a.outcome}: {a.reason}" for a in episode.attempts)
    live = f", {metric} {figure:.4f} (floor {threshold})" if metric and figure is not None else ""
    return AdaptationStalled(
        model=model,
        onset=episode.start,
        trigger=episode.kind,
        attempts=list(episode.attempts),
        metric=metric,
        figure=figure,
        threshold=threshold,
        reason=f"{episode.kind} since {episode.start.isoformat()}, {episode.windows} window(s)"
        f"{live}: {episode.failed} attempt(s) failed ({tried})",
    )


@dataclass(frozen=True)
class Episodes:
    """The champion's open episodes, at most one of each kind."""

    open: dict[EpisodeKind, Episode] = field(default_factory=dict)

    def get(self, kind: EpisodeKind) -> Episode | None:
        return self.open.get(kind)

    def put(self, kind: EpisodeKind, episode: Episode | None) -> Episodes:
        rest = {k: e for k, e in self.open.items() if k != kind}
        return Episodes(rest if episode is None else rest | {kind: episode})

    def of_cycle(self, cycle_id: str | None) -> Episode | None:
        """The open episode that started cycle `cycle_id`, if any."""
        return next((e for e in self.open.values() if e.cycle_id == cycle_id), None)

    def dump(self) -> dict[str, Any]:
        """As stored (JSON)."""
        return {
            kind: {
                "start": e.start.isoformat(),
                "windows": e.windows,
                "event_id": e.event_id,
                "cycle_id": e.cycle_id,
                "attempts": [a.model_dump(mode="json") for a in e.attempts],
                "stalled": e.stalled,
            }
            for kind, e in self.open.items()
        }

    @classmethod
    def load(cls, raw: dict[str, Any] | None) -> Episodes:
        """From what `dump` stored (None: none open)."""
        found: dict[EpisodeKind, Episode] = {}
        for kind in KINDS:
            row = (raw or {}).get(kind)
            if row:
                found[kind] = Episode(
                    kind=kind,
                    start=datetime.fromisoformat(row["start"]),
                    windows=int(row["windows"]),
                    event_id=row.get("event_id"),
                    cycle_id=row.get("cycle_id"),
                    attempts=tuple(Attempt.model_validate(a) for a in row.get("attempts", [])),
                    stalled=bool(row.get("stalled")),
                )
        return cls(found)


def episode_status(episode: Episode, *, retry_labels: int, labels_since: int) -> dict[str, Any]:
    """An episode as the status shows it: its onset, windows, failed attempts, and, after a
    failed attempt, the labels the next one waits for (`labels_since` the last one started)."""
    needed = labels_for_retry(episode.failed, retry_labels) if episode.failed else None
    return {
        "onset": episode.start.isoformat(),
        "windows": episode.windows,
        "last_event_id": episode.event_id,
        "cycle_id": episode.cycle_id,
        "attempts": [a.model_dump(mode="json") for a in episode.attempts],
        "stalled": episode.stalled,
        "next_attempt": episode.failed + 1,
        "retry_labels_needed": needed,
        "labels_since_last_attempt": labels_since if episode.failed else None,
    }
