"""Fixtures of the integration tests: a connected bus, a live gateway (see tests/loop.py) and
the prediction records published from now on."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from loop import bus, gateway

from driftloop.shared.bus import Bus
from driftloop.shared.events import PredictionBatch

__all__ = ["bus", "gateway", "records"]


@pytest.fixture
async def records(bus: Bus) -> AsyncIterator[list[PredictionBatch]]:
    """Every prediction record published from now on (served and shadow)."""
    seen: list[PredictionBatch] = []

    async def keep(msg: Any) -> None:
        seen.append(PredictionBatch.model_validate_json(msg.data))

    sub = await bus.nc.subscribe("driftloop.predictions.>", cb=keep)
    yield seen
    await sub.unsubscribe()
