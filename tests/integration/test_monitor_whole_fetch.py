"""The monitor's prediction records handled a fetch at a time (`on_all_predictions`: each
model's row and each version's stats read and written once, consecutive champion records added
to the window together) decide exactly what the same records decide one by one
(`on_predictions`): the same windows closed after the same records, by size and by time, the
same events, figures and counters. On the monitor's real, migrated store."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from driftloop.monitor import handlers
from driftloop.monitor.adapters.loaded import stored_window
from driftloop.monitor.adapters.store import (
    VERSIONS,
    load_stats,
    messaging,
    save,
    save_profile,
)
from driftloop.monitor.domain.drift import Window
from driftloop.shared import service
from driftloop.shared.config import Settings
from driftloop.shared.db import (
    SqlUnitOfWork,
    TransactionScopeError,
    delivering,
    delivering_all,
    delivering_batch,
)
from driftloop.shared.events import FeedbackBatch, Label, PredictionBatch
from driftloop.shared.profile import build_profile
from driftloop.shared.spec import ModelSpec, parse_spec

MODEL = "churn"
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
SPEC = parse_spec(
    f"model: {MODEL}\ntarget: churned\nmonitor:\n"
    "  window: 25\n  window_time: 1m\n  window_min_rows: 5\n"
)


class Specs:
    async def get(self, model: str) -> ModelSpec | None:
        return SPEC if model == MODEL else None


def frame(rng: np.random.Generator, n: int, scale: float) -> pd.DataFrame:
    return pd.DataFrame(
        {"tenure": rng.gamma(2.0, scale, n).round(1), "plan": rng.choice(["basic", "pro"], n)}
    )


def store(home: Path) -> SqlUnitOfWork:
    settings = Settings(home=home)
    uow = service.open_store(settings, service="monitor", messaging=messaging, versions=VERSIONS)
    profile = build_profile(MODEL, frame(np.random.default_rng(0), 2000, 12.0), ["tenure", "plan"])
    with uow.engine.begin() as conn:  # the reference, as a Deployed event leaves it
        save_profile(conn, MODEL, profile.model_dump(mode="json"))
        save(
            conn,
            MODEL,
            reference_version="1",
            reference_run_id="run-1",
            reference_at=T0,
            window=stored_window(Window()),
        )
    return uow


def records() -> list[tuple[str, PredictionBatch]]:
    """43 one-row records: 12 drifted ones a second apart, a 70-second pause (the window closes
    by time before the next joins), then 31 ordinary ones (a window of 25 closes after the 25th
    of them; 6 stay open). A canary record and a shadow's copy among them."""
    rng = np.random.default_rng(5)
    rows = pd.concat([frame(rng, 12, 120.0), frame(rng, 31, 12.0)]).to_dict("records")
    seconds = [*range(12), *range(81, 112)]
    out = []
    for n, (row, s) in enumerate(zip(rows, seconds, strict=True)):
        out.append(
            (
                f"m{n}",
                PredictionBatch(
                    model=MODEL,
                    version="1",
                    route="champion",
                    ids=[f"r{n}"],
                    instances=[row],
                    predictions=[n % 2],
                    latency_ms=1.0,
                    at=T0 + timedelta(seconds=s),
                ),
            )
        )
    shadow = out[20][1].model_copy(update={"route": "shadow", "version": "2"})
    canary = out[30][1].model_copy(update={"route": "canary", "version": "2", "ids": ["c30"]})
    return [*out[:21], ("s20", shadow), *out[21:31], ("c30", canary), *out[31:]]


async def one_by_one(
    uow: SqlUnitOfWork,
    given: list[tuple[str, Any]],
    handle: Callable[..., Awaitable[None]] = handlers.on_predictions,
    specs: Any = None,
) -> None:
    """Each record alone, as the bus hands it to `handle` (the predictions' by default)."""
    for message_id, record in given:
        with delivering(message_id):
            await handle(record, uow=uow, specs=specs or Specs(), now=lambda: T0)


async def whole(
    uow: SqlUnitOfWork,
    given: list[tuple[str, Any]],
    handle: Callable[..., Awaitable[None]] = handlers.on_all_predictions,
    specs: Any = None,
) -> None:
    """The records as one fetch, handed whole to `handle` (the predictions' by default)."""
    with delivering_batch() as batch, delivering_all([m for m, _ in given]):
        await handle(given, uow=uow, specs=specs or Specs(), now=lambda: T0)
        batch.commit()


IDS = ("cycle_id", "cause_id", "last_event_id", "open_cycle_id")


def same(a: Any, b: Any) -> bool:
    """Equal but for the ids each run makes anew (cycles, events) and the reasons naming them."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(
            k in IDS or (k == "reason" and "cycle" in str(a[k])) or same(a[k], b[k]) for k in a
        )
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def outcome(uow: SqlUnitOfWork) -> dict[str, Any]:
    with uow.engine.connect() as conn:
        events = [
            {k: v for k, v in json.loads(r.payload)["data"].items() if k != "episode_start"}
            for r in conn.execute(sa.select(messaging.outbox).order_by(messaging.outbox.c.seq))
        ]
        stats = {
            route: (load_stats(conn, MODEL, version, route) or {}).get("stats")
            for version, route in (("1", "champion"), ("2", "shadow"), ("2", "canary"))
        }
        inbox = conn.execute(sa.select(sa.func.count()).select_from(messaging.inbox)).scalar()
    return {"events": events, "stats": stats, "inbox": inbox}


async def test_a_fetch_handled_whole_decides_what_its_records_decide_one_by_one(
    tmp_path: Path,
) -> None:
    given = records()
    alone, together = store(tmp_path / "alone"), store(tmp_path / "together")
    try:
        await one_by_one(alone, given)
        await whole(together, given[:30])  # two fetches: the second starts mid-window
        await whole(together, given[30:])

        expected = await handlers.status(MODEL, uow=alone)
        got = await handlers.status(MODEL, uow=together)
        assert same(got, expected), (got, expected)
        assert got["rows_seen"] == 43  # champion rows (the canary's and shadow's not)
        assert got["window_rows"] == 6
        last = got["last_drift"]
        assert last["rows"] == 25
        assert last["window_start"] == (T0 + timedelta(seconds=81)).isoformat()
        assert last["window_end"] == (T0 + timedelta(seconds=105)).isoformat()
        assert same(outcome(together), outcome(alone))
        drifts = [e for e in outcome(together)["events"] if "drifted_features" in e]
        assert [(e["rows"], datetime.fromisoformat(e["window_end"])) for e in drifts] == [
            (12, T0 + timedelta(seconds=11))  # closed by time, before the pause
        ]
        assert outcome(together)["stats"]["champion"]["requests"] == 43
        assert outcome(together)["inbox"] == 45
    finally:
        alone.engine.dispose()
        together.engine.dispose()


async def test_a_record_handled_before_is_left_out_of_the_fetch(tmp_path: Path) -> None:
    given = records()[:10]
    uow = store(tmp_path / "home")
    try:
        await one_by_one(uow, given[:4])
        await whole(uow, given)  # the first four again: a redelivery

        status = await handlers.status(MODEL, uow=uow)
        assert status["rows_seen"] == 10
        assert outcome(uow)["stats"]["champion"]["requests"] == 10
        assert outcome(uow)["inbox"] == 10
    finally:
        uow.engine.dispose()


async def test_handling_all_takes_only_the_records_the_bus_handed_over(tmp_path: Path) -> None:
    given = records()[:3]
    uow = store(tmp_path / "home")
    try:
        with pytest.raises(TransactionScopeError):  # no fetch in hand
            async with uow.handling_all(given):
                pass
        with (
            delivering_batch(),
            delivering_all([m for m, _ in given[:2]]),
            pytest.raises(TransactionScopeError),
        ):
            async with uow.handling_all(given):  # not the fetch handed over
                pass
        assert outcome(uow)["inbox"] == 0
    finally:
        uow.engine.dispose()


LABELLED_SPEC = parse_spec(
    f"model: {MODEL}\ntarget: churned\nmonitor:\n  window: 25\n"
    "  performance: {metric: accuracy, min: 0.7, min_labels: 10}\n"
)


class LabelledSpecs:
    async def get(self, model: str) -> ModelSpec | None:
        return LABELLED_SPEC if model == MODEL else None


def labelled_store(home: Path) -> SqlUnitOfWork:
    """A reference with a label profile (the label window needs one) and 60 one-row champion
    records answered: the first 30 right, the last 30 wrong (the live accuracy falls through
    the floor)."""
    uow = store(home)
    rng = np.random.default_rng(1)
    reference = frame(rng, 2000, 12.0).assign(churned=rng.integers(0, 2, 2000))
    profile = build_profile(
        MODEL,
        reference,
        ["tenure", "plan"],
        predictions=rng.integers(0, 2, 2000),
        target="churned",
    )
    with uow.engine.begin() as conn:
        save_profile(conn, MODEL, profile.model_dump(mode="json"))
    return uow


def truth(n: int) -> int:
    return n % 2


async def answered(uow: SqlUnitOfWork) -> None:
    rng = np.random.default_rng(2)
    rows = frame(rng, 60, 12.0).to_dict("records")
    given = [
        (
            f"p{n}",
            PredictionBatch(
                model=MODEL,
                version="1",
                route="champion",
                ids=[f"r{n}"],
                instances=[row],
                predictions=[truth(n) if n < 30 else 1 - truth(n)],
                latency_ms=1.0,
                at=T0 + timedelta(seconds=n),
            ),
        )
        for n, row in enumerate(rows)
    ]
    await one_by_one(uow, given)


def label_records() -> list[tuple[str, FeedbackBatch]]:
    """The 60 rows' labels in 13 records of 5 (in order, a minute after their answers), and
    one more: a repeated label (the first wins) and one for an id never answered."""
    out = [
        (
            f"f{k}",
            FeedbackBatch(
                model=MODEL,
                labels=[Label(id=f"r{n}", label=truth(n)) for n in range(5 * k, 5 * k + 5)],
                at=T0 + timedelta(seconds=60 + 5 * k),
            ),
        )
        for k in range(12)
    ]
    odd = FeedbackBatch(
        model=MODEL,
        labels=[Label(id="r3", label=1 - truth(3)), Label(id="nobody", label=1)],
        at=T0 + timedelta(seconds=130),
    )
    return [*out[:7], ("odd", odd), *out[7:]]


async def labels_one_by_one(uow: SqlUnitOfWork, given: list[tuple[str, FeedbackBatch]]) -> None:
    await one_by_one(uow, given, handlers.on_feedback, LabelledSpecs())


async def labels_whole(uow: SqlUnitOfWork, given: list[tuple[str, FeedbackBatch]]) -> None:
    await whole(uow, given, handlers.on_all_feedback, LabelledSpecs())


async def test_a_fetch_of_labels_handled_whole_decides_what_its_records_decide_one_by_one(
    tmp_path: Path,
) -> None:
    given = label_records()
    alone, together = labelled_store(tmp_path / "alone"), labelled_store(tmp_path / "together")
    try:
        await answered(alone)
        await answered(together)
        await labels_one_by_one(alone, given)
        await labels_whole(together, given[:6])  # two fetches: one evaluation's labels in each
        await labels_whole(together, given[6:])

        expected = await handlers.status(MODEL, uow=alone)
        got = await handlers.status(MODEL, uow=together)
        assert same(got, expected), (got, expected)
        # every 10 new labels an evaluation (the odd record's: one, of the unknown id): 6 of
        # the 61, on the newest 25 labelled answers once there are; the newest are the wrong
        history = got["performance_history"]
        assert [h["labels"] for h in history] == [10, 20, 25, 25, 25, 25]
        assert history[-1]["figure"] == 0.0
        # the label window of 25 judged after 25 labels, then after 26 (the odd record's one
        # joined before a record of 5 made 26); 10 wait
        assert got["last_label_drift"]["rows"] == 26
        assert got["label_window_rows"] == 10
        events = outcome(together)["events"]
        assert same(events, outcome(alone)["events"])
        assert [e["figure"] for e in events if "figure" in e] == [
            h["figure"] for h in history if h["figure"] < 0.7
        ][:1]  # the episode's first evaluation is reported (event_every folds the next)
        assert any(e.get("trigger") == "performance" for e in events)  # and it retrains
        assert outcome(together)["inbox"] == 60 + 13
    finally:
        alone.engine.dispose()
        together.engine.dispose()
