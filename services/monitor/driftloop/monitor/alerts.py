"""Alerts: queued in the transaction that handles their event, sent by a delivery worker.

`alerting(handler)` wraps the handler of an event (or stands alone for the events the monitor
reads only to tell people): before the handler runs, it renders the event's alert for each
destination of the model's spec that wants it and has the rows written in the handler's one
transaction (`db.also_write`), so an alert is queued exactly when its event is handled, and a
repeat of the event (its inbox row exists) queues nothing. `AlertWorker` sends what is due,
one alert at a time per destination and destinations side by side, retrying a failed one with
exponential backoff per destination; a destination that hangs costs its own alerts a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from driftloop.monitor.adapters import alerts as outbox
from driftloop.monitor.adapters.notify import Sender
from driftloop.monitor.domain.alerts import (
    Message,
    destinations_for,
    given_up,
    message,
    retry_at,
    severity,
)
from driftloop.shared.config import Settings
from driftloop.shared.db import SqlUnitOfWork, Tx, also_write, current_message_id, opened
from driftloop.shared.events import Event
from driftloop.shared.service import SpecSource

logger = logging.getLogger(__name__)
E = TypeVar("E", bound=Event)
TICK_SECONDS = 1.0  # looks for due alerts at least this often (and whenever one is queued)
KEEP_DONE = timedelta(days=30)  # sent (or given up) alerts are kept this long
PRUNE_EVERY = timedelta(hours=1)


def alerting(
    handler: Callable[[E], Awaitable[None]] | None,
    *,
    uow: SqlUnitOfWork,
    specs: SpecSource,
    settings: Settings,
    now: Callable[[], datetime],
    wake: asyncio.Event,
) -> Callable[[E], Awaitable[None]]:
    """`handler` (None: nothing but the alerts) with the event's alerts queued in its
    transaction."""

    async def handle(event: E) -> None:
        spec = await specs.get(event.model)
        names = destinations_for(event, spec.alerts) if spec is not None else []
        if names:
            event_id = current_message_id()
            if event_id is None:
                raise RuntimeError("alerting() handles a message the bus hands over")
            alert = message(event, console=settings.console(event.model))
            also_write(_queue(event, event_id, alert, names, now))
        if handler is not None:
            await handler(event)
        if names and not opened():  # the handler wrote nothing: the alerts alone, once
            async with uow.handling():
                pass
        if names:
            wake.set()

    return handle


def _queue(
    event: Event,
    event_id: str,
    alert: Message,
    names: list[str],
    now: Callable[[], datetime],
) -> Callable[[Tx], None]:
    def write(tx: Tx) -> None:
        queued = outbox.enqueue(
            tx.conn,
            event_id=event_id,
            model=event.model,
            event_type=event.event_type(),
            message=alert,
            destinations=names,
            now=now(),
        )
        logger.info(
            "alerts queued",
            extra={"model": event.model, "event": event.event_type(), "destinations": queued},
        )

    return write


class AlertWorker:
    """Sends the due alerts of the outbox until cancelled."""

    def __init__(
        self,
        uow: SqlUnitOfWork,
        settings: Settings,
        *,
        now: Callable[[], datetime],
        tick: float = TICK_SECONDS,
    ) -> None:
        self.uow = uow
        self.urls = settings.alert_urls
        self.now = now
        self.tick = tick
        self.wake = asyncio.Event()
        self.sender = Sender(timeout=settings.alerts_timeout)
        self._sending: dict[str, asyncio.Task[None]] = {}  # destination -> its one send
        self._waiting: dict[str, datetime] = {}  # destination -> not tried before (backoff)
        self._pruned: datetime | None = None

    async def run(self) -> None:
        try:
            while True:
                try:
                    self._round()
                    await self._prune()
                except Exception:
                    logger.exception("alert delivery round failed; next round later")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self.tick)
                self.wake.clear()
        finally:
            for task in self._sending.values():
                task.cancel()
            self.sender.close()

    def _round(self) -> None:
        now = self.now()
        with self.uow.engine.connect() as conn:
            rows = outbox.due(conn, now=now)
        for row in rows:
            destination = row.destination
            if destination in self._sending or self._waiting.get(destination, now) > now:
                continue  # one at a time per destination, oldest first; or backing off
            task = asyncio.create_task(self._deliver(row), name=f"alert-{destination}")
            self._sending[destination] = task
            task.add_done_callback(partial(self._done, destination))

    def _done(self, destination: str, _task: asyncio.Task[None]) -> None:
        self._sending.pop(destination, None)
        self.wake.set()  # the destination's next alert, if one is due

    async def _deliver(self, row: Any) -> None:
        destination = row.destination
        url = self.urls.get(destination)
        if url is None:
            ok, reason = False, f"{destination} is not set in the monitor's environment"
        else:
            sent = await self.sender.send(
                url, Message(row.title, row.body), severity=severity(row.event_type)
            )
            ok, reason = sent.ok, sent.reason
        now = self.now()
        extra = {
            "model": row.model,
            "event": row.event_type,
            "event_id": row.event_id,
            "destination": destination,
            "attempt": row.attempts + 1,
        }
        try:
            async with self.uow.transaction() as tx:
                if ok:
                    outbox.mark_sent(tx.conn, row.seq, now=now)
                elif given_up(row.created_at, now=now):
                    outbox.mark_given_up(tx.conn, row.seq, now=now, error=reason)
                else:
                    after = retry_at(row.attempts + 1, now=now)
                    outbox.mark_failed(
                        tx.conn, row.seq, attempts=row.attempts + 1, next_at=after, error=reason
                    )
                    self._waiting[destination] = after
        except Exception:  # sent but not marked: sent again later (at least once)
            logger.exception("alert outcome not recorded", extra=extra)
            return
        if ok:
            self._waiting.pop(destination, None)
            logger.info("alert sent", extra=extra)
        elif given_up(row.created_at, now=now):
            logger.error("alert given up", extra=extra | {"error": reason})
        else:
            logger.warning("alert not sent; will retry", extra=extra | {"error": reason})

    async def _prune(self) -> None:
        now = self.now()
        if self._pruned is not None and now - self._pruned < PRUNE_EVERY:
            return
        self._pruned = now
        async with self.uow.transaction() as tx:  # the write lock: never block the loop
            outbox.prune(tx.conn, older_than=now - KEEP_DONE)
