"""A shadow's answers compared with the champion's answers to the same requests, whichever
record comes first.

The shadow's worker publishes its records on a connection of its own, so its record of a
request can reach the monitor before or after the champion's. A shadow answer whose champion
answer is here is compared at once; the others wait in monitor_shadow_answers and are compared
when the champion's record comes, or dropped after SHADOW_PAIR_WAIT. Before, only the first
case counted, so a shadow that kept up with the champion was compared on a part of its rows.

A fetch of records is compared at once (`compare_shadows`): during a shadow stage every
request has two records, and a lookup per record was 60 % of the monitor's CPU."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from driftloop.monitor.adapters.loaded import Loaded
from driftloop.monitor.adapters.store import (
    HeldAnswer,
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


def compare_shadows(tx: Tx, loaded: Loaded, batches: list[PredictionBatch]) -> None:
    """A fetch's shadow answers compared with the served answers to the same requests, in a
    few queries per model whatever the fetch's size (each record once took its own). Call it
    after the fetch's served answers are recorded (`record_served`), so a pair within the
    fetch is found whichever record came first:

    1. the answers held for this fetch's champion records (their shadow record came in an
       earlier fetch) are taken and compared with the champion's answers here;
    2. this fetch's shadow answers whose served answer is recorded (earlier, or in this
       fetch) are compared with it;
    3. the rest wait for their champion's record (`monitor_shadow_answers`)."""
    champion: dict[str, list[PredictionBatch]] = defaultdict(list)
    shadow: dict[str, list[PredictionBatch]] = defaultdict(list)
    for batch in batches:
        if batch.error is None and batch.route in ("champion", "shadow"):
            (champion if batch.route == "champion" else shadow)[batch.model].append(batch)
    pairs: dict[tuple[str, str], list[tuple[Any, Any]]] = defaultdict(list)
    for model, served in champion.items():
        for row in _take_held(tx, model, served):
            pairs[(model, row.version)].append((row.prediction, row.answer))
    for model, answered in shadow.items():
        answers = champion_answers(tx.conn, model, [i for b in answered for i in b.ids])
        held: list[HeldAnswer] = []
        for batch in answered:
            for i, p in zip(batch.ids, batch.predictions, strict=False):
                if i in answers:
                    pairs[(model, batch.version)].append((p, answers[i]))
                else:
                    held.append(HeldAnswer(i, batch.version, p, batch.at))
        hold_shadow_answers(tx.conn, model, held)
        if held:
            _may_hold[_key(tx, model)] = True
    for (model, version), compared in pairs.items():
        stats = _compared(loaded.stats(model, version, "shadow"), compared)
        loaded.put_stats(model, version, "shadow", stats)


class _Paired(NamedTuple):
    version: str
    prediction: Any  # the shadow's
    answer: Any  # the champion's


def _take_held(tx: Tx, model: str, served: list[PredictionBatch]) -> list[_Paired]:
    """The shadow answers held for these champion records, each with the champion's answer
    (its first record's, if a request id repeats), deleted from the held ones."""
    key = _key(tx, model)
    if key not in _may_hold:
        _may_hold[key] = holds_shadow_answers(tx.conn, model)
    if not _may_hold[key]:
        return []
    mine: dict[str, Any] = {}
    for batch in served:
        for i, p in zip(batch.ids, batch.predictions, strict=False):
            mine.setdefault(i, p)
    taken = take_shadow_answers(tx.conn, model, list(mine))
    return [_Paired(row.version, row.prediction, mine[row.id]) for row in taken]


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
