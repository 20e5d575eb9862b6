"""A shadow's answers are compared with the champion's answers to the same requests whichever
record reaches the monitor first (the shadow's worker publishes on a connection of its own, so
its record can come first), on the monitor's real, migrated store and its real handler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from driftloop.monitor import handlers
from driftloop.monitor.adapters.store import VERSIONS, load_stats, messaging, shadow_answers
from driftloop.monitor.comparisons import SHADOW_PAIR_WAIT
from driftloop.shared import service
from driftloop.shared.config import Settings
from driftloop.shared.db import SqlUnitOfWork, delivering, new_id
from driftloop.shared.events import PredictionBatch

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


class NoSpecs:
    async def get(self, model: str) -> None:
        return None


@pytest.fixture
def uow(tmp_path: Path, db_url: str | None) -> Any:
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    store = service.open_store(settings, service="monitor", messaging=messaging, versions=VERSIONS)
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
