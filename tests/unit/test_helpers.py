"""The suite's own guarantees (docs/testing.md): a crashed service task fails its test, at once
when the test is waiting, and a service stopped on purpose does not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest
from helpers import SERVICE_TASKS, eventually, stop_services


async def crashes() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("boom")


async def serves() -> None:
    await asyncio.Event().wait()


@pytest.fixture
async def watched() -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Tasks registered as the `running` fixture registers them; cleared afterwards."""
    tasks: list[asyncio.Task[Any]] = []
    yield tasks
    for task in tasks:
        SERVICE_TASKS.remove(task)
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def start(watched: list[asyncio.Task[Any]], coro: Coroutine[Any, Any, None]) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(coro)
    watched.append(task)
    SERVICE_TASKS.append(task)
    return task


async def test_eventually_raises_a_crashed_service_instead_of_waiting_out_its_timeout(
    watched: list[asyncio.Task[Any]],
) -> None:
    crashed = start(watched, crashes())
    await asyncio.wait([crashed])

    with pytest.raises(AssertionError, match="a service task crashed") as raised:
        await eventually(lambda: False, timeout=120)

    assert isinstance(raised.value.__cause__, RuntimeError)


async def test_stopping_fails_when_a_service_crashed_during_the_test() -> None:
    crashed = asyncio.ensure_future(crashes())
    alive = asyncio.ensure_future(serves())
    await asyncio.wait([crashed])

    with pytest.raises(AssertionError, match="crashed during the test") as raised:
        await stop_services([crashed, alive])

    assert isinstance(raised.value.__cause__, RuntimeError)
    assert alive.cancelled()


async def test_services_cancelled_by_the_test_or_the_teardown_are_not_crashes() -> None:
    stopped_by_the_test = asyncio.ensure_future(serves())
    alive = asyncio.ensure_future(serves())
    await asyncio.sleep(0)
    stopped_by_the_test.cancel()
    await asyncio.wait([stopped_by_the_test])

    await stop_services([stopped_by_the_test, alive])

    assert alive.cancelled()


async def test_stopping_fails_when_a_service_raises_while_being_stopped() -> None:
    async def fails_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("shutdown went wrong") from None

    task = asyncio.ensure_future(fails_to_stop())
    await asyncio.sleep(0)

    with pytest.raises(AssertionError, match=r"raised while being stopped.*shutdown went wrong"):
        await stop_services([task])
