"""Dead letters against a real nats-server: a message whose handler keeps failing, or that cannot
be read, is published to DRIFTLOOP_DEADLETTER with its error and terminated, and
`driftloop events` shows it among the events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import consumer_settled, eventually
from nats.js.api import ConsumerInfo, RawStreamMsg

from driftloop.cli.client import DeadLetter, Entry, Received, read_log
from driftloop.shared import bus as bus_module
from driftloop.shared.bus import (
    DEAD_LETTER_DELIVERIES,
    DEAD_LETTER_DURABLE,
    DEAD_LETTER_ERROR,
    DEAD_LETTER_SEQUENCE,
    DEAD_LETTER_STREAM,
    DEAD_LETTER_SUBJECT,
    DEADLETTER_STREAM,
    Bus,
    connect_bus,
)
from driftloop.shared.config import Settings
from driftloop.shared.events import EVENTS_STREAM, Envelope, ModelTrained

SUBJECT = "driftloop.events.m.ModelTrained"
DURABLE = "t-ModelTrained"


@pytest.fixture
def settings(tmp_path: Path, nats_url: str) -> Settings:
    """No database: dead-lettering is the bus's alone."""
    return Settings(home=tmp_path / "home", nats_url=nats_url)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus_module, "backoff", lambda attempt: 0.05)


def trained() -> ModelTrained:
    return ModelTrained(
        model="m",
        cycle_id=str(uuid.uuid4()),
        version="1",
        run_id="run-1",
        dataset_version="abc",
        metrics={"f1": 0.9},
        trigger="manual",
    )


async def dead_letters(bus: Bus, count: int) -> list[RawStreamMsg]:
    """The first `count` dead letters, once they are all there."""

    async def check() -> list[RawStreamMsg]:
        info = await bus.js.stream_info(DEADLETTER_STREAM)
        assert info.state.messages == count, info.state
        return [await bus.js.get_msg(DEADLETTER_STREAM, seq) for seq in range(1, count + 1)]

    letters: list[RawStreamMsg] = await eventually(check, timeout=10, interval=0.1)
    return letters


async def settled(bus: Bus, *, acked: int) -> ConsumerInfo:
    info: ConsumerInfo = await consumer_settled(bus.js, DURABLE, acked=acked)
    return info


async def test_a_handler_that_keeps_failing_dead_letters_the_message_after_max_deliver(
    settings: Settings,
) -> None:
    calls: list[str] = []

    async def handler(received: ModelTrained) -> None:
        calls.append(received.run_id)
        raise RuntimeError("boom\non two lines")

    async with connect_bus(settings, service="t") as bus:
        event_id = await bus.publish(trained())
        bus.subscribe(ModelTrained, handler, max_deliver=3)

        [letter] = await dead_letters(bus, 1)
        await settled(bus, acked=1)
        await asyncio.sleep(0.5)  # nothing comes back: the message was terminated
        info = await settled(bus, acked=1)

    assert calls == ["run-1"] * 3
    assert info.num_redelivered == 0
    assert letter.subject == f"driftloop.deadletter.m.{DURABLE}"
    assert json.loads(letter.data or b"")["id"] == event_id  # the payload, unchanged
    headers = letter.headers or {}
    assert headers[DEAD_LETTER_ERROR] == "RuntimeError: boom on two lines"
    assert headers[DEAD_LETTER_DELIVERIES] == "3"
    assert headers[DEAD_LETTER_DURABLE] == DURABLE
    assert headers[DEAD_LETTER_SUBJECT] == SUBJECT
    assert headers[DEAD_LETTER_STREAM] == EVENTS_STREAM
    assert headers[DEAD_LETTER_SEQUENCE] == "1"
    assert headers["Nats-Msg-Id"] == f"{EVENTS_STREAM}:1:dlq"


async def test_an_unreadable_message_is_dead_lettered_once_and_terminated(
    settings: Settings,
) -> None:
    future = Envelope(
        id=str(uuid.uuid4()),
        source="/services/future",
        type="ModelRetrainedV9",
        time=datetime.now(UTC),
        subject="other",
        data={"model": "other"},
    )
    calls: list[ModelTrained] = []

    async def handler(received: ModelTrained) -> None:
        calls.append(received)

    async with connect_bus(settings, service="t") as bus:
        await bus.js.publish(SUBJECT, b"\xff\x00 not json", headers={"Nats-Msg-Id": "garbage"})
        await bus.js.publish(SUBJECT, future.model_dump_json().encode())
        bus.subscribe(ModelTrained, handler)

        garbage, unknown = await dead_letters(bus, 2)
        info = await settled(bus, acked=2)

    assert calls == []
    assert info.num_redelivered == 0
    # the model token: the subject's 3rd token when the payload is no envelope, else its subject
    assert garbage.subject == f"driftloop.deadletter.m.{DURABLE}"
    assert unknown.subject == f"driftloop.deadletter.other.{DURABLE}"
    assert garbage.data == b"\xff\x00 not json"
    assert (garbage.headers or {})[DEAD_LETTER_ERROR].startswith(
        "UnknownEventError: not a CloudEvent"
    )
    assert (unknown.headers or {})[DEAD_LETTER_ERROR] == (
        "UnknownEventError: unknown event type 'ModelRetrainedV9'"
    )
    assert (unknown.headers or {})[DEAD_LETTER_DELIVERIES] == "1"


async def test_a_message_whose_last_attempt_never_finished_is_dead_lettered_unhandled(
    settings: Settings,
) -> None:
    calls: list[str] = []
    started = asyncio.Event()

    async def hangs(received: ModelTrained) -> None:
        calls.append(received.run_id)
        started.set()
        await asyncio.Event().wait()  # the process dies here

    async with connect_bus(settings, service="t") as bus:
        await bus.publish(trained())
        bus.subscribe(ModelTrained, hangs, max_deliver=1, ack_wait=1.0)
        await asyncio.wait_for(started.wait(), timeout=10)
    # the spare delivery comes once ack_wait has passed with nobody working on it
    async with connect_bus(settings, service="t") as bus:
        bus.subscribe(ModelTrained, hangs, max_deliver=1, ack_wait=1.0)
        [letter] = await dead_letters(bus, 1)
        await settled(bus, acked=1)

    assert calls == ["run-1"]
    assert (letter.headers or {})[DEAD_LETTER_ERROR] == "no outcome after 1 deliveries"
    assert (letter.headers or {})[DEAD_LETTER_DELIVERIES] == "2"


def driftloop_events(*args: str, settings: Settings) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env |= {"DRIFTLOOP_HOME": str(settings.home), "DRIFTLOOP_NATS_URL": str(settings.nats_url)}
    result = subprocess.run(
        [sys.executable, "-m", "driftloop.cli", "events", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


async def test_driftloop_events_shows_dead_letters_among_the_events(settings: Settings) -> None:
    async def fails(received: ModelTrained) -> None:
        raise ValueError("cannot judge")

    async with connect_bus(settings, service="t") as bus:
        event_id = await bus.publish(trained())
        await bus.js.publish(SUBJECT, b"plain text", headers={"Nats-Msg-Id": "text"})
        bus.subscribe(ModelTrained, fails, max_deliver=2)
        await dead_letters(bus, 2)

    lines = await asyncio.to_thread(driftloop_events, "--json", settings=settings)
    table = await asyncio.to_thread(driftloop_events, "m", settings=settings)
    elsewhere = await asyncio.to_thread(driftloop_events, "other", "--json", settings=settings)

    docs: list[dict[str, Any]] = [json.loads(line) for line in lines]
    assert [d["type"] for d in docs] == ["ModelTrained", "DeadLetter", "DeadLetter"]
    assert docs[0]["id"] == event_id
    unreadable = next(d for d in docs[1:] if d["data"] == "plain text")
    failed = next(d for d in docs[1:] if d is not unreadable)
    assert failed == {
        "type": "DeadLetter",
        "subject": SUBJECT,
        "model": "m",
        "stream": EVENTS_STREAM,
        "sequence": 1,
        "durable": DURABLE,
        "deliveries": 2,
        "error": "ValueError: cannot judge",
        "time": failed["time"],
        "data": docs[0],
    }
    assert unreadable["deliveries"] == 1
    assert unreadable["error"].startswith("UnknownEventError: not a CloudEvent")
    assert datetime.fromisoformat(docs[0]["time"]) <= datetime.fromisoformat(failed["time"])
    assert sum("DeadLetter" in line for line in table) == 2
    assert any("ValueError: cannot judge" in line for line in table)
    assert elsewhere == []


async def test_following_the_log_shows_a_dead_letter_as_it_happens(settings: Settings) -> None:
    async def fails(received: ModelTrained) -> None:
        raise ValueError("cannot judge")

    async with connect_bus(settings, service="t") as bus:
        event_id = await bus.publish(trained())
        entries: list[Entry] = []

        async def follow() -> None:
            async for entry in read_log(bus, "m", follow=True):
                entries.append(entry)

        async def seen(count: int) -> bool:
            assert len(entries) == count, entries
            return True

        task = asyncio.create_task(follow())
        try:
            await eventually(lambda: seen(1), timeout=10)  # the history: the event
            bus.subscribe(ModelTrained, fails, max_deliver=1)
            await eventually(lambda: seen(2), timeout=10)  # then the dead letter, as it comes
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    event, letter = entries
    assert isinstance(event, Received)
    assert event.envelope["id"] == event_id
    assert isinstance(letter, DeadLetter)
    assert (letter.durable, letter.deliveries, letter.error) == (
        DURABLE,
        1,
        "ValueError: cannot judge",
    )
    assert letter.data == event.envelope
