"""Alerts: which events tell people, what each says, and when a failed send is tried again.
Pure.

A model's spec lists its destinations (`alerts:`), each with the events it wants. Drift and
performance alert on the first window of an episode only (the monitor reports a persisting
episode again every `monitor.event_every` windows; a person needs telling once). Each message
says what happened, the figures, and what to do next, with a link to the model's console page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from driftloop.shared.events import (
    AdaptationStalled,
    ApprovalRequired,
    CheckResult,
    DataRejected,
    Deployed,
    DriftDetected,
    EvaluationFailed,
    Event,
    FeatureDrift,
    PerformanceDegraded,
    RolledBack,
    TrainingFailed,
)
from driftloop.shared.spec import ALERT_EVENTS, AlertDestination

Severity = Literal["info", "success", "warning", "failure"]  # apprise's notify types
LISTED = 10  # figures (features, checks, attempts) shown in one message; the rest counted
FIRST_RETRY = timedelta(seconds=1)
LONGEST_RETRY = timedelta(minutes=10)
GIVE_UP_AFTER = timedelta(days=1)  # an alert older than this is not news any more
LOWER_IS_BETTER = frozenset({"rmse", "mae"})


@dataclass(frozen=True)
class Message:
    title: str
    body: str


def alertable(event: Event) -> bool:
    """Whether `event` is news for a person: one of the alert events, and for drift and
    performance the first window of its episode."""
    if event.event_type() not in ALERT_EVENTS:
        return False
    if isinstance(event, DriftDetected | PerformanceDegraded):
        return event.episode_windows == 1
    return True


def destinations_for(event: Event, destinations: Sequence[AlertDestination]) -> list[str]:
    """The destinations (their `url_env` names) that get an alert for `event`, in spec order."""
    if not alertable(event):
        return []
    return [d.url_env for d in destinations if event.event_type() in d.events]


def severity(event_type: str) -> Severity:
    """How the destination shows it (apprise's notify type)."""
    if event_type == "Deployed":
        return "success"
    if event_type in ("ApprovalRequired", "AlertTest"):
        return "info"
    if event_type in ("DriftDetected", "PerformanceDegraded"):
        return "warning"
    return "failure"


def retry_at(attempts: int, *, now: datetime) -> datetime:
    """When a destination that failed `attempts` times in a row (>= 1) is tried again:
    1 s, 2 s, 4 s, ... doubling up to 10 minutes."""
    wait: timedelta = FIRST_RETRY * 2 ** min(max(attempts - 1, 0), 20)
    return now + min(wait, LONGEST_RETRY)


def given_up(created_at: datetime, *, now: datetime) -> bool:
    """Whether an alert not sent since `created_at` is dropped (logged) rather than retried."""
    return now - created_at > GIVE_UP_AFTER


def trial_message(model: str, destination: str, *, console: str) -> Message:
    """What `driftloop alerts test MODEL` sends to each destination."""
    return Message(
        f"[driftloop] {model}: test alert",
        f"A test alert for model {model} to the destination in {destination}: if you read "
        f"this, its alerts reach you.\n\nConsole: {console}",
    )


def message(event: Event, *, console: str) -> Message:
    """The alert for `event`: title, then what happened, the figures and what to do next."""
    what, figures, next_step = _describe(event)
    title = f"[driftloop] {event.model}: {what}"
    parts = [what[0].upper() + what[1:] + "."]
    if figures:
        parts.append("\n".join(figures))
    parts.append(f"Next: {next_step}")
    parts.append(f"Console: {console}")
    return Message(title, "\n\n".join(parts))


def _describe(event: Event) -> tuple[str, list[str], str]:
    m = event.model
    if isinstance(event, DriftDetected):
        drifted = sorted(
            (f for f in event.features if f.drifted), key=lambda f: f.psi, reverse=True
        )
        onset = event.episode_start or event.window_start
        return (
            f"input drift in {len(drifted)} of {len(event.features)} features",
            [
                f"Window {_at(event.window_start)} to {_at(event.window_end)}, {event.rows} rows, "
                f"against the reference of version {event.reference_version or '?'}; "
                f"episode since {_at(onset)}.",
                *_listed([_feature(f) for f in drifted], "features"),
                *([_feature(event.prediction)] if event.prediction is not None else []),
            ],
            "a retraining starts on its own when the drift passes monitor.drift.psi_retrain "
            "and the cooldown allows; first check the drifted features' sources for a "
            "pipeline change (a unit, a new category, missing values) that a retrain would "
            f"learn as if it were real. `driftloop status {m}` shows the episode.",
        )
    if isinstance(event, PerformanceDegraded):
        lower = event.metric in LOWER_IS_BETTER
        short = event.figure - event.threshold if lower else event.threshold - event.figure
        return (
            f"{event.metric} {_num(event.figure)} is past its floor {_num(event.threshold)}",
            [
                f"{event.metric} {_num(event.figure)} on {event.labels} labels "
                f"({'above' if lower else 'below'} the floor by {_num(short)}), window "
                f"{_at(event.window_start)} to {_at(event.window_end)}; episode since "
                f"{_at(event.episode_start or event.window_start)}.",
            ],
            "a retraining starts on its own when the cooldown allows; check that the "
            "labels sent as feedback are right and current, and the inputs for drift. "
            f"`driftloop status {m}` shows the live metric.",
        )
    if isinstance(event, EvaluationFailed):
        failed = [c for c in event.checks if not c.passed]
        return (
            f"challenger version {event.version} failed its evaluation",
            [
                f"Against champion {event.champion_version or '(none)'}: {event.metric} "
                f"{_num(event.challenger_score)} vs {_num(event.champion_score)}. "
                f"Reason: {event.reason}",
                *_listed([_check(c) for c in failed], "failed checks"),
            ],
            "the champion keeps serving; the monitor tries again once monitor.retry_labels "
            f"more labels arrive. See `driftloop lineage {m} {event.version}` for the data "
            "and the checks; if the checks are too strict, change the evaluator section of "
            "the spec and `driftloop apply` it.",
        )
    if isinstance(event, DataRejected):
        failed = [c for c in event.report if not c.passed]
        return (
            "training data rejected: nothing was trained",
            [f"Reason: {event.reason}", *_listed([_check(c) for c in failed], "failed checks")],
            "look at the labelled rows sent as feedback since the episode began (bad or "
            "poisoned labels, impossible values); the champion keeps serving and the monitor "
            "retries once more labels arrive.",
        )
    if isinstance(event, TrainingFailed):
        report = [f"{k}: {v}" for k, v in sorted(event.report.items())]
        return (
            "training failed",
            [f"Reason: {event.reason}", *_listed(report, "report entries")],
            "check the recipe in the spec and that labels reach the feedback endpoint; "
            f"`driftloop events {m}` shows the cycle. The champion keeps serving.",
        )
    if isinstance(event, RolledBack):
        checks = [event.check] if event.check is not None else []
        checks += [c for c in event.checks if not c.passed and c not in checks]
        return (
            f"version {event.version} was rolled back",
            [
                f"Version {event.restored_version or '(none)'} serves again; by {event.by}."
                + (f" Reason: {event.reason}" if event.reason else ""),
                *_listed([_check(c) for c in checks], "failed checks"),
            ],
            "nothing to do for serving; if the rollback was not expected, compare the two "
            f"versions with `driftloop lineage {m} {event.version}` and the console's "
            "canary figures.",
        )
    if isinstance(event, ApprovalRequired):
        return (
            f"version {event.version} waits for your approval",
            [f"Cycle {event.cycle_id}: it passed its evaluation and its shadow/canary stages."],
            f"approve it with `driftloop approve {m} {event.version}`, or end the rollout "
            f"with `driftloop approve {m} {event.version} --reject` (unanswered, it is rolled "
            "back after deployer.approval_timeout).",
        )
    if isinstance(event, AdaptationStalled):
        attempts = [f"{a.outcome} ({_at(a.at)}): {a.reason}" for a in event.attempts]
        live = (
            [f"Live {event.metric}: {_num(event.figure)} (floor {_num(event.threshold)})."]
            if event.metric and event.figure is not None
            else []
        )
        return (
            f"adaptation stalled after {len(event.attempts)} failed attempts",
            [
                f"The model has been {event.trigger}-affected since "
                f"{_at(event.onset) if event.onset else '?'}.",
                *live,
                *_listed(attempts, "attempts"),
            ],
            "retraining is not fixing it on its own: look at the data (drifted features, "
            "labels), the recipe and the evaluation thresholds; the monitor keeps retrying as "
            f"labels arrive. `driftloop status {m}` shows the episode.",
        )
    if isinstance(event, Deployed):
        return (
            f"version {event.version} is the champion",
            [f"It replaced version {event.previous_version or '(none)'}; cycle {event.cycle_id}."],
            "nothing; the monitor now judges drift against its training data.",
        )
    return (event.event_type(), [], f"`driftloop events {m}`.")


def _listed(lines: list[str], what: str) -> list[str]:
    rest = len(lines) - LISTED
    return [f"- {line}" for line in lines[:LISTED]] + (
        [f"- and {rest} more {what}"] if rest > 0 else []
    )


def _feature(f: FeatureDrift) -> str:
    return f"{f.feature}: PSI {f.psi:.3f} (warn {_num(f.warn)}, retrain {_num(f.retrain)})"


def _check(c: CheckResult) -> str:
    figures = f" {_num(c.figure)} (threshold {_num(c.threshold)})" if c.figure is not None else ""
    return f"{c.name}{figures}" + (f": {c.detail}" if c.detail else "")


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


def _at(when: datetime) -> str:
    return when.isoformat(timespec="seconds")
