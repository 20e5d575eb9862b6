"""The events stream (the audit log) as people read it, and a person's command to the deployer:
what the `driftloop` command and the gateway's web console share. The CLI follows the stream
with consumers (cli/client.py); the console reads one model's events by direct gets, all the
gateway's account may do on the stream (shared/permissions.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nats.js.errors import NotFoundError

from driftloop.shared.bus import Bus
from driftloop.shared.events import DEPLOYER_CONTROL, EVENTS_STREAM

GET_BATCH = 256  # stream messages asked for at once when reading back from the end
CONTROL_ACTIONS = ("approve", "reject", "pause", "resume", "promote", "rollback")


@dataclass(frozen=True)
class Received:
    envelope: dict[str, Any]
    headers: dict[str, str]
    sequence: int = 0  # in the events stream (0: not known)

    @property
    def type(self) -> str:
        return str(self.envelope.get("type"))

    @property
    def data(self) -> dict[str, Any]:
        data = self.envelope.get("data")
        return data if isinstance(data, dict) else {}


def events_subject(model: str | None) -> str:
    return f"driftloop.events.{model}.>" if model else "driftloop.events.>"


def describe(received: Received) -> str:
    """One line saying what an event means."""
    d = received.data
    t = received.type
    if t == "RetrainRequested":
        return f"trigger={d.get('trigger')} {d.get('reason', '')}"
    if t == "ModelTrained":
        metrics = ", ".join(
            f"{k}={v:.3f}"
            for k, v in sorted(d.get("metrics", {}).items())
            if isinstance(v, int | float)
        )
        return f"version {d.get('version')} dataset {d.get('dataset_version')} {metrics}"
    if t in ("EvaluationPassed", "EvaluationFailed"):
        return f"version {d.get('version')}: {d.get('reason')}"
    if t == "Deployed":
        return f"version {d.get('version')} (was {d.get('previous_version') or 'none'})"
    if t == "DriftDetected":
        return f"{d.get('rows')} rows, drifted: {', '.join(d.get('drifted_features', []))}"
    if t in ("TrainingFailed", "DataRejected"):
        return str(d.get("reason"))
    if t == "RolledBack":
        check = d.get("check") or {}
        figures = (
            f" ({check.get('name')} {check.get('figure')} > {check.get('threshold')})"
            if check
            else ""
        )
        return (
            f"version {d.get('version')} -> {d.get('restored_version')}: {d.get('reason')}{figures}"
        )
    if t == "RolloutAdvanced":
        paused = " (paused)" if d.get("paused") else ""
        why = f" - {d['reason']}" if d.get("reason") else ""
        return f"version {d.get('version')} {d.get('stage')} {d.get('weight')}%{paused}{why}"
    if t == "ApprovalRequired":
        return f"version {d.get('version')}: driftloop approve {d.get('model')} {d.get('version')}"
    if t == "Approved":
        return f"version {d.get('version')} by {d.get('by')}"
    return json.dumps(d)[:200]


# One model's events by direct gets (no consumer: what the gateway's account may do) --------


async def events_between(
    bus: Bus, model: str, start: int, stop: int | None = None
) -> AsyncIterator[Received]:
    """`model`'s events from stream sequence `start` up to (not including) `stop`, oldest
    first: one get of the next message on the model's subjects each."""
    subject = events_subject(model)
    seq = max(start, 1)
    while stop is None or seq < stop:
        try:
            raw = await bus.js.get_msg(EVENTS_STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:  # nothing more on the model's subjects
            return
        if raw.seq is None or (stop is not None and raw.seq >= stop):
            return
        seq = raw.seq + 1
        try:
            env = json.loads(raw.data or b"")
        except ValueError:
            continue
        if isinstance(env, dict):
            yield Received(env, dict(raw.headers or {}), raw.seq)


async def follow_events(
    bus: Bus, model: str, *, after: int, every: float = 0.5
) -> AsyncIterator[Received]:
    """`model`'s events after stream sequence `after` as they are appended: the stream is
    looked at every `every` seconds (an idle follower costs one get each time)."""
    while True:
        async for event in events_between(bus, model, after + 1):
            after = event.sequence
            yield event
        await asyncio.sleep(every)


async def last_events(
    bus: Bus, model: str, *, limit: int, before: int | None = None
) -> tuple[list[Received], bool]:
    """The newest `limit` events of `model` (those before stream sequence `before`, when
    given), oldest first, and whether older ones exist. Reads a stretch of the stream back
    from its end, widening it until it holds more than `limit` of the model's events: a long
    log costs about `limit` gets (sent together), not the whole history."""
    info = await bus.js.stream_info(EVENTS_STREAM)
    end = info.state.last_seq + 1
    end = end if before is None else min(before, end)
    span = limit + 1
    found: list[Received] = []
    while True:
        start = max(end - span, 1)
        found = [*await _stretch(bus, model, start, end), *found]
        end = start
        if len(found) > limit or start == 1:
            return found[-limit:], len(found) > limit
        span *= 4


async def _stretch(bus: Bus, model: str, start: int, end: int) -> list[Received]:
    """`model`'s events among stream sequences [start, end): every message asked for at once
    (pipelined on the connection), those on other subjects dropped."""
    prefix = f"driftloop.events.{model}."

    async def get(seq: int) -> Received | None:
        try:
            raw = await bus.js.get_msg(EVENTS_STREAM, seq=seq)
        except NotFoundError:  # not there (beyond the end, or a gap)
            return None
        if not (raw.subject or "").startswith(prefix):
            return None
        try:
            env = json.loads(raw.data or b"")
        except ValueError:
            return None
        return Received(env, dict(raw.headers or {}), seq) if isinstance(env, dict) else None

    found: list[Received] = []
    for first in range(start, end, GET_BATCH):
        got = await asyncio.gather(*(get(s) for s in range(first, min(first + GET_BATCH, end))))
        found.extend(r for r in got if r is not None)
    return found


async def ask_deployer(
    bus: Bus, action: str, model: str, *, actor: str, token: str | None, **fields: Any
) -> dict[str, Any]:
    """A person's command (`CONTROL_ACTIONS`) as the deployer carries it out and audits it:
    `{"ok": true, "rollout": {...}}` or `{"ok": false, "error": why}`. Raises nats'
    NoRespondersError or TimeoutError when the deployer does not answer."""
    request = {
        "action": action,
        "model": model,
        "actor": actor,
        "token": token,
        **{k: v for k, v in fields.items() if v is not None},
    }
    answer: dict[str, Any] = await bus.request(DEPLOYER_CONTROL, request, timeout=30)
    return answer
