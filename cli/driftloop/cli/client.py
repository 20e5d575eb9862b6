"""What the CLI does on the bus: publish control events, read and follow the event log (and the
dead letters beside it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from driftloop.shared.bus import (
    DEAD_LETTER_DELIVERIES,
    DEAD_LETTER_DURABLE,
    DEAD_LETTER_ERROR,
    DEAD_LETTER_SEQUENCE,
    DEAD_LETTER_STREAM,
    DEAD_LETTER_SUBJECT,
    DEADLETTER_PREFIX,
    DEADLETTER_STREAM,
    Bus,
)

# Received and events_subject live in shared.eventlog (the web console reads events too)
from driftloop.shared.eventlog import Received as Received
from driftloop.shared.eventlog import events_subject as events_subject
from driftloop.shared.events import EVENTS_STREAM, TERMINAL_TYPES


async def read_events(
    bus: Bus, model: str | None, *, follow: bool, new_only: bool = False, idle: float = 1.0
) -> AsyncIterator[Received]:
    """The event log from the start (or only new events), oldest first; without `follow` it
    ends when the history is exhausted."""
    policy = DeliverPolicy.NEW if new_only else DeliverPolicy.ALL
    subject = events_subject(model)
    async with aclosing(_messages(bus, EVENTS_STREAM, subject, policy=policy, idle=idle)) as msgs:
        async for msg in msgs:
            if msg is None:
                if not follow:
                    return
            elif isinstance(received := _entry(EVENTS_STREAM, msg), Received):
                yield received


@dataclass(frozen=True)
class DeadLetter:
    """A message a consumer gave up on (see driftloop.shared.bus): the original payload and why."""

    model: str
    subject: str
    stream: str
    sequence: int
    durable: str
    deliveries: int
    error: str
    time: datetime
    payload: bytes

    @classmethod
    def from_msg(cls, msg: Msg) -> DeadLetter:
        h = msg.headers or {}
        tokens = msg.subject.split(".")
        return cls(
            model=tokens[2] if len(tokens) > 3 else "_",
            subject=h.get(DEAD_LETTER_SUBJECT, ""),
            stream=h.get(DEAD_LETTER_STREAM, ""),
            sequence=int(h.get(DEAD_LETTER_SEQUENCE) or 0),
            durable=h.get(DEAD_LETTER_DURABLE, ""),
            deliveries=int(h.get(DEAD_LETTER_DELIVERIES) or 0),
            error=h.get(DEAD_LETTER_ERROR, ""),
            time=msg.metadata.timestamp,
            payload=msg.data,
        )

    @property
    def data(self) -> Any:
        """The original message as JSON if it parses, else as text."""
        try:
            return json.loads(self.payload)
        except ValueError:
            return self.payload.decode(errors="replace")

    def as_json(self) -> dict[str, Any]:
        """The line `driftloop events --json` prints for it (CloudEvent-like)."""
        return {
            "type": "DeadLetter",
            "subject": self.subject,
            "model": self.model,
            "stream": self.stream,
            "sequence": self.sequence,
            "durable": self.durable,
            "deliveries": self.deliveries,
            "error": self.error,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }


Entry = Received | DeadLetter


async def read_log(
    bus: Bus, model: str | None, *, follow: bool, idle: float = 1.0
) -> AsyncIterator[Entry]:
    """Events and dead letters: the history of both in time order, then (with `follow`) each
    new one as it arrives."""
    token = model or "*"
    sources = (
        (EVENTS_STREAM, events_subject(model)),
        (DEADLETTER_STREAM, f"{DEADLETTER_PREFIX}.{token}.>"),
    )
    queue: asyncio.Queue[Entry | Exception | None] = asyncio.Queue()

    async def pump(stream: str, subject: str) -> None:
        try:
            async with aclosing(_messages(bus, stream, subject, idle=idle)) as messages:
                async for msg in messages:
                    if msg is None:
                        await queue.put(None)  # this stream's history is read
                    elif (entry := _entry(stream, msg)) is not None:
                        await queue.put(entry)
        except Exception as exc:
            await queue.put(exc)

    tasks = [asyncio.create_task(pump(stream, subject)) for stream, subject in sources]
    try:
        history: list[Entry] = []
        caught_up = 0
        while caught_up < len(tasks):
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if item is None:
                caught_up += 1
            else:
                history.append(item)
        for entry in sorted(history, key=_when):
            yield entry
        while follow:
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if item is not None:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task


async def _messages(
    bus: Bus,
    stream: str,
    subject: str,
    *,
    policy: DeliverPolicy = DeliverPolicy.ALL,
    idle: float,
) -> AsyncGenerator[Msg | None, None]:
    """Every message of `stream` on `subject`, oldest first; None once the history is read;
    then the new ones as they arrive."""
    sub = await bus.js.subscribe(
        subject, stream=stream, ordered_consumer=True, deliver_policy=policy
    )
    try:
        try:
            info = await sub.consumer_info()
            # nothing to read: say so now rather than after `idle`
            caught_up = info.num_pending == 0 and not (info.delivered and info.delivered.stream_seq)
        except Exception:
            caught_up = False
        if caught_up:
            yield None
        while True:
            try:
                msg = await sub.next_msg(timeout=idle)
            except (TimeoutError, nats.errors.TimeoutError):
                if not caught_up:
                    caught_up = True
                    yield None
                continue
            yield msg
            if not caught_up and msg.metadata.num_pending == 0:
                caught_up = True
                yield None
    finally:
        with suppress(Exception):
            await sub.unsubscribe()


def _entry(stream: str, msg: Msg) -> Entry | None:
    if stream == DEADLETTER_STREAM:
        return DeadLetter.from_msg(msg)
    try:
        env = json.loads(msg.data)
    except ValueError:
        return None
    return Received(env, dict(msg.headers or {})) if isinstance(env, dict) else None


def _when(entry: Entry) -> datetime:
    if isinstance(entry, DeadLetter):
        return entry.time
    try:
        at = datetime.fromisoformat(str(entry.envelope.get("time")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


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


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait until it is done. nats-py's next_msg waits with
    asyncio.wait_for, which on Python 3.11 can swallow a cancel that lands as its wait ends, so
    one cancel() may not stop a follower: cancel until it is done."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
    with suppress(asyncio.CancelledError, Exception):
        await task


TRAINER_STATUS = "driftloop.rpc.trainer.status"  # answered by the trainer (adapters/progress.py)


async def trainer_waits(bus: Bus, model: str | None = None) -> list[dict[str, Any]]:
    """The retrainings the trainer is waiting for labels for (of `model`, or every model's),
    each with its `progress` line; empty when the trainer does not answer."""
    try:
        answer = await bus.request(TRAINER_STATUS, {"model": model or ""}, timeout=1.0)
    except Exception:  # no trainer up, or an older one without the request: nothing to show
        return []
    waiting = answer.get("waiting")
    return [w for w in waiting if isinstance(w, dict)] if isinstance(waiting, list) else []


async def follow_waits(
    bus: Bus,
    model: str,
    show: Callable[[dict[str, Any]], None],
    *,
    cycle_id: str | None = None,
    every: float = 5.0,
) -> None:
    """Until cancelled, ask the trainer every `every` seconds what it waits for and `show` each
    changed progress line (of `cycle_id` only, when given)."""
    shown: dict[str, str] = {}
    while True:
        for wait in await trainer_waits(bus, model):
            cycle = str(wait.get("cycle_id"))
            line = str(wait.get("progress", ""))
            if (cycle_id is None or cycle == cycle_id) and shown.get(cycle) != line:
                shown[cycle] = line
                show(wait)
        await asyncio.sleep(every)
