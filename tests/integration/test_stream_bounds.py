"""A record stream's bound against a real nats-server: set by the process whose settings name
one, kept by every process whose settings do not (docs/reliability.md, "Records discarded")."""

from __future__ import annotations

from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import FEEDBACK_STREAM, PREDICTIONS_STREAM


async def bounds(settings: Settings) -> tuple[int, int]:
    async with connect_bus(settings, service="test", ensure=False) as bus:
        predictions = await bus.js.stream_info(PREDICTIONS_STREAM)
        feedback = await bus.js.stream_info(FEEDBACK_STREAM)
    return predictions.config.max_bytes, feedback.config.max_bytes


async def test_a_bound_changes_only_where_a_process_names_one(settings: Settings) -> None:
    plain = settings.model_copy()  # names no bound: `settings` is built without one
    async with connect_bus(plain, service="test"):  # a new stream: the defaults
        pass
    assert await bounds(plain) == (Settings().predictions_max_bytes, -1)

    named = settings.model_copy(update={"predictions_max_bytes": 1 << 20})
    async with connect_bus(named, service="test"):
        pass
    assert await bounds(plain) == (1 << 20, -1)

    async with connect_bus(plain, service="test"):  # e.g. `driftloop status` in another shell
        pass
    assert await bounds(plain) == (1 << 20, -1)

    both = settings.model_copy(update={"predictions_max_bytes": -1, "feedback_max_bytes": 4096})
    async with connect_bus(both, service="test"):
        pass
    assert await bounds(plain) == (-1, 4096)
