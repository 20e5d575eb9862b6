"""A shadow's answers compared with the champion's answers to the same requests, whichever
record comes first.

The shadow's worker publishes its records on a connection of its own, so its record of a
request can reach the monitor before or after the champion's. A shadow answer whose champion
answer is here is compared at once; the others wait in monitor_shadow_answers and are compared
when the champion's record comes (`pair_held`), or dropped after SHADOW_PAIR_WAIT. Before,
only the first case counted, so a shadow that kept up with the champion was compared on a
part of its rows."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from driftloop.monitor.adapters.loaded import Loaded
from driftloop.monitor.adapters.store import (
    champion_answers,
    drop_shadow_answers_before,
    hold_shadow_answers,
    holds_shadow_answers,
    take_shadow_answers,
)
from driftloop.monitor.domain.live import VersionStats, add_comparison, disagreement
from driftloop.shared.db import Tx
from driftloop.shared.events import PredictionBatch

# Which models of which store may have shadow answers waiting: a champion batch looks for them
# only then (no query at all while no shadow runs). Unknown at start: asked once.
_may_hold: dict[tuple[str, str], bool] = {}

SHADOW_PAIR_WAIT = timedelta(hours=1)
"""How long a shadow answer waits for the champion's (records are seconds apart, unless the
gateway's bus was away; longer than that, the pair is lost and the row not compared)."""


def compare_shadow(tx: Tx, batch: PredictionBatch, stats: VersionStats) -> VersionStats:
    """A shadow batch: its answers compared with the champion answers already here; the rest
    held for the champion's record."""
    answers = champion_answers(tx.conn, batch.model, batch.ids)
    pairs: list[tuple[Any, Any]] = []
    held: list[tuple[str, Any]] = []
    for i, p in zip(batch.ids, batch.predictions, strict=False):
        if i in answers:
            pairs.append((p, answers[i]))
        else:
            held.append((i, p))
    hold_shadow_answers(tx.conn, batch.model, batch.version, held, batch.at)
    if held:
        _may_hold[_key(tx, batch.model)] = True
    return _compared(stats, pairs)


def pair_held(tx: Tx, loaded: Loaded, batch: PredictionBatch) -> None:
    """A champion batch: the shadow answers that waited for it are compared now, each in its
    shadow version's stats."""
    if batch.route != "champion" or batch.error:
        return
    key = _key(tx, batch.model)
    if key not in _may_hold:
        _may_hold[key] = holds_shadow_answers(tx.conn, batch.model)
    if not _may_hold[key]:
        return
    held = take_shadow_answers(tx.conn, batch.model, batch.ids)
    if not held:
        return
    mine = dict(zip(batch.ids, batch.predictions, strict=False))
    per_version: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    for row in held:  # taken by this batch's ids: each has its champion answer here
        per_version[row.version].append((row.prediction, mine[row.id]))
    for version, pairs in per_version.items():
        stats = _compared(loaded.stats(batch.model, version, "shadow"), pairs)
        loaded.put_stats(batch.model, version, "shadow", stats)


def _compared(stats: VersionStats, pairs: list[tuple[Any, Any]]) -> VersionStats:
    """The stats with these (shadow answer, champion answer) pairs compared."""
    return add_comparison(
        stats,
        compared=len(pairs),
        disagreed=disagreement([p for p, _ in pairs], [c for _, c in pairs]),
    )


def drop_unpaired(tx: Tx, *, now: datetime) -> int:
    """Shadow answers whose champion answer did not come within SHADOW_PAIR_WAIT; then which
    models still have some (a champion batch stops looking for those that have none)."""
    dropped = drop_shadow_answers_before(tx.conn, now - SHADOW_PAIR_WAIT)
    store = str(tx.conn.engine.url)
    for key in [k for k in _may_hold if k[0] == store]:
        _may_hold[key] = holds_shadow_answers(tx.conn, key[1])
    return dropped


def _key(tx: Tx, model: str) -> tuple[str, str]:
    return str(tx.conn.engine.url), model
