"""What the CLI does on the bus: publish control events, read and follow the event log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import nats
from nats.js.api import DeliverPolicy

from driftloop.shared.bus import Bus
from driftloop.shared.events import EVENTS_STREAM, TERMINAL_TYPES


@dataclass(frozen=True)
class Received:
    envelope: dict[str, Any]
    headers: dict[str, str]

    @property
    def type(self) -> str:
        return str(self.envelope.get("type"))

    @property
    def data(self) -> dict[str, Any]:
        data = self.envelope.get("data")
        return data if isinstance(data, dict) else {}


def events_subject(model: str | None) -> str:
    return f"driftloop.events.{model}.>" if model else "driftloop.events.>"


async def read_events(
    bus: Bus, model: str | None, *, follow: bool, new_only: bool = False, idle: float = 1.0
) -> AsyncIterator[Received]:
    """The event log from the start (or only new events), oldest first; without `follow` it
    ends when the history is exhausted."""
    policy = DeliverPolicy.NEW if new_only else DeliverPolicy.ALL
    sub = await bus.js.subscribe(
        events_subject(model), stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=policy
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle)
            except (TimeoutError, nats.errors.TimeoutError):
                if follow:
                    continue
                return
            try:
                env = json.loads(msg.data)
            except json.JSONDecodeError:
                continue
            yield Received(env, dict(msg.headers or {}))
            if not follow and msg.metadata.num_pending == 0:
                return
    finally:
        with suppress(Exception):
            await sub.unsubscribe()


def is_terminal(received: Received) -> bool:
    return received.type in TERMINAL_TYPES


async def wait_for_cycle(
    bus: Bus, model: str, cycle_id: str, *, queue: asyncio.Queue[Received], timeout: float
) -> Received:
    """Pass each event of the cycle to `queue` until its terminal one, which is returned."""
    async with asyncio.timeout(timeout):
        async for received in read_events(bus, model, follow=True):
            if received.data.get("cycle_id") != cycle_id:
                continue
            await queue.put(received)
            if is_terminal(received):
                return received
    raise TimeoutError  # pragma: no cover - the loop only ends by return or timeout
