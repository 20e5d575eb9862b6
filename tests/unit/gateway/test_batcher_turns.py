"""The batcher's event-loop side: a request arriving a turn after another joins its batch,
unless nobody could have come (occupancy.py), when the first goes at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from driftloop.gateway.adapters.batcher import Batcher
from driftloop.gateway.domain.batching import BatchBounds


@dataclass
class Recording:
    """A model version that answers each row's `x` and notes every call's rows."""

    model: str = "churn"
    version: str = "1"
    calls: list[list[Any]] = field(default_factory=list)

    def predict(self, rows: list[dict[str, Any]]) -> tuple[list[Any], None]:
        self.calls.append([r["x"] for r in rows])
        return [r["x"] for r in rows], None


def batcher_where(nobody_coming: Callable[[], bool]) -> Batcher:
    return Batcher(
        BatchBounds(max_rows=32, max_wait_s=1.0),
        observe=lambda *_: None,
        nobody_coming=nobody_coming,
    )


async def two_requests_a_turn_apart(nobody_coming: bool) -> tuple[Recording, list[Any]]:
    chosen = Recording()
    batcher = batcher_where(lambda: nobody_coming)
    first = asyncio.ensure_future(batcher.predict(chosen, [{"x": 1}]))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the first is queued and its batch is forming
    second = asyncio.ensure_future(batcher.predict(chosen, [{"x": 2}]))  # type: ignore[arg-type]
    answers = await asyncio.gather(first, second)
    return chosen, [a[0] for a in answers]


async def test_a_request_a_turn_later_joins_the_forming_batch() -> None:
    chosen, answers = await two_requests_a_turn_apart(nobody_coming=False)

    assert chosen.calls == [[1, 2]]
    assert answers == [[1], [2]]


async def test_a_lone_request_goes_at_once_when_nobody_can_come() -> None:
    chosen, answers = await two_requests_a_turn_apart(nobody_coming=True)

    assert chosen.calls == [[1], [2]]
    assert answers == [[1], [2]]


async def test_a_lone_request_on_an_idle_queue_is_predicted_on_its_own_turn() -> None:
    chosen = Recording()
    batcher = batcher_where(lambda: True)
    ran: list[str] = []
    asyncio.get_running_loop().call_soon(ran.append, "other work")

    answer = await batcher.predict(chosen, [{"x": 7}])  # type: ignore[arg-type]

    assert answer == ([7], None)
    assert ran == []  # nothing queued on the loop ran ahead of this request's answer


async def test_a_request_when_nobody_can_come_still_joins_a_batch_already_queued() -> None:
    chosen = Recording()
    asked: list[bool] = []
    batcher = batcher_where(lambda: (asked.append(bool(asked)), asked[-1])[1])  # no, then yes
    first = asyncio.ensure_future(batcher.predict(chosen, [{"x": 1}]))  # type: ignore[arg-type]
    second = asyncio.ensure_future(batcher.predict(chosen, [{"x": 2}]))  # type: ignore[arg-type]

    answers = await asyncio.gather(first, second)

    assert asked[:2] == [False, True]  # the second came when nobody else could
    assert chosen.calls == [[1, 2]]  # it joined the first's batch, not went ahead of it
    assert [a[0] for a in answers] == [[1], [2]]
