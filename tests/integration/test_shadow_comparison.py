"""A shadow's answers are compared with the champion's answers to the same requests whichever
record reaches the monitor first (the shadow's worker publishes on a connection of its own, so
its record can come first), on the monitor's real, migrated store and its real handler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftloop.monitor import handlers
from driftloop.monitor.adapters import store as monitor_store
from driftloop.monitor.adapters.store import VERSIONS, load_stats, messaging, shadow_answers
from driftloop.monitor.comparisons import SHADOW_PAIR_WAIT
from driftloop.shared import service
from driftloop.shared.config import Settings
from driftloop.shared.db import (
    SqlUnitOfWork,
    delivering,
    delivering_all,
    delivering_batch,
    new_id,
)
from driftloop.shared.events import PredictionBatch

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class NoSpecs:
    async def get(self, model: str) -> None:
        return None


def open_store(home: Path, db_url: str | None) -> SqlUnitOfWork:
    settings = Settings(home=home, database_url=db_url)
    return service.open_store(settings, service="monitor", messaging=messaging, versions=VERSIONS)


@pytest.fixture
def uow(tmp_path: Path, db_url: str | None) -> Any:
    store = open_store(tmp_path / "home", db_url)
    yield store
    store.engine.dispose()


def served(route: str, version: str, ids: list[str], answers: list[int]) -> PredictionBatch:
    return PredictionBatch(
        model="churn",
        version=version,
        route=route,  # type: ignore[arg-type]
        ids=ids,
        instances=[{"x": 1.0} for _ in ids],
        predictions=answers,
        latency_ms=1.0,
        at=NOW,
    )


async def handle(uow: SqlUnitOfWork, batch: PredictionBatch, *, at: datetime = NOW) -> None:
    with delivering(new_id()):
        await handlers.on_predictions(batch, uow=uow, specs=NoSpecs(), now=lambda: at)


def shadow_stats(uow: SqlUnitOfWork) -> dict[str, Any]:
    with uow.engine.connect() as conn:
        found = load_stats(conn, "churn", "1", "shadow")
    assert found is not None
    return dict(found["stats"])


def held(uow: SqlUnitOfWork) -> int:
    with uow.engine.connect() as conn:
        return len(list(conn.execute(shadow_answers.select())))


@pytest.mark.parametrize("shadow_first", [True, False], ids=["shadow-first", "champion-first"])
async def test_every_shadow_answer_is_compared_whichever_record_comes_first(
    uow: SqlUnitOfWork, shadow_first: bool
) -> None:
    ids = [f"r{i}" for i in range(10)]
    champion = served("champion", "2", ids, [0] * 10)
    shadow = served("shadow", "1", ids, [0] * 7 + [1] * 3)  # 3 of 10 differ
    for batch in (shadow, champion) if shadow_first else (champion, shadow):
        await handle(uow, batch)

    stats = shadow_stats(uow)
    assert (stats["rows"], stats["compared"], stats["disagreed"]) == (10, 10, 3)
    assert held(uow) == 0  # paired and gone


async def test_a_shadow_answer_whose_champion_never_comes_is_dropped_after_the_wait(
    uow: SqlUnitOfWork,
) -> None:
    await handle(uow, served("shadow", "1", ["a", "b"], [1, 0]))
    await handlers.prune_samples(uow=uow, specs=NoSpecs(), now=NOW + SHADOW_PAIR_WAIT / 2)
    assert held(uow) == 2
    await handlers.prune_samples(
        uow=uow, specs=NoSpecs(), now=NOW + SHADOW_PAIR_WAIT + timedelta(seconds=1)
    )
    assert held(uow) == 0
    await handle(uow, served("champion", "2", ["a", "b"], [1, 1]))  # too late: not compared
    stats = shadow_stats(uow)
    assert (stats["rows"], stats["compared"]) == (2, 0)


def interleaved() -> list[PredictionBatch]:
    """30 requests answered by the champion (version 2) and a shadow (version 1, differing on
    every third), their two records in every order: adjacent either way, or one of them at the
    end (so in a later fetch); then two shadow answers whose champion never comes, one of them
    twice (its later answer replaces the held one)."""
    first: list[PredictionBatch] = []
    last: list[PredictionBatch] = []
    for n in range(30):
        champion = served("champion", "2", [f"r{n}"], [n % 2])
        shadow = served("shadow", "1", [f"r{n}"], [n % 2 if n % 3 else 1 - n % 2])
        if n % 4 == 0:
            first += [shadow, champion]
        elif n % 4 == 1:
            first += [champion, shadow]
        elif n % 4 == 2:
            first.append(shadow)
            last.append(champion)
        else:
            first.append(champion)
            last.append(shadow)
    lonely = [served("shadow", "1", ["x1"], [0]), served("shadow", "1", ["x2"], [1])]
    return [*first, *lonely, *last, served("shadow", "1", ["x1"], [1])]


async def test_a_fetch_compares_its_shadow_answers_as_its_records_one_by_one_do(
    tmp_path: Path, db_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole fetches (`compare_shadows`: a few queries per fetch, ids in chunks) count the same
    comparisons and hold the same answers as the records handled one at a time."""
    monkeypatch.setattr(monitor_store, "IN_CHUNK", 4)  # every fetch's lookups in several chunks
    batches = interleaved()
    found = {}
    for how in ("alone", "fetches"):  # on PostgreSQL one schema: cleaned after each run
        store = open_store(tmp_path / how, db_url)
        try:
            if how == "alone":
                for batch in batches:
                    await handle(store, batch)
            else:
                for k in range(0, len(batches), 7):
                    given = [(new_id(), b) for b in batches[k : k + 7]]
                    with delivering_batch() as fetch, delivering_all([m for m, _ in given]):
                        await handlers.on_all_predictions(
                            given, uow=store, specs=NoSpecs(), now=lambda: NOW
                        )
                        fetch.commit()
            stats = shadow_stats(store)
            with store.engine.connect() as conn:
                waiting = {r.id: r.prediction for r in conn.execute(shadow_answers.select())}
            found[how] = (stats["rows"], stats["compared"], stats["disagreed"], waiting)
            if db_url:
                with store.engine.begin() as conn:
                    conn.execute(shadow_answers.delete())
                    conn.execute(monitor_store.version_stats.delete())
                    conn.execute(monitor_store.samples.delete())
        finally:
            store.engine.dispose()
    assert found["alone"] == (33, 30, 10, {"x1": 1, "x2": 1})
    assert found["fetches"] == found["alone"]
