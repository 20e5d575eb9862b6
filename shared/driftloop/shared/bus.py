"""The bus: JetStream streams, durable pull consumers, KV buckets and the outbox relay.

Handlers never ack, publish or retry: this module does. A handler error is retried with backoff
up to `max_deliver`; a repeat (its inbox row exists) is acked and ignored. A store that is busy
or out of reach (a locked SQLite file, a restarting PostgreSQL) is the same retry, logged as a
warning without a traceback, and the rest of the fetched batch is handed back with backoff
rather than each message waiting out the same lock in turn: with the default 20 deliveries a
store may be away about 14 minutes (backoff 1, 2, 4 ... 60 s) before its messages are
dead-lettered. A message that cannot be parsed, or whose handler still fails on its last
allowed delivery (or at once: opened a second transaction for it, `TransactionScopeError`),
is dead-lettered: its payload is published unchanged to
`driftloop.deadletter.<model>.<durable>` (stream DRIFTLOOP_DEADLETTER, kept) with the
`DEAD_LETTER_*` headers saying where it came from and why, then terminated (no redelivery
storm). `driftloop events` shows dead letters among the events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, start_http_server
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine

from driftloop.shared.config import Settings
from driftloop.shared.db import (
    DuplicateMessageError,
    Messaging,
    SqlUnitOfWork,
    TransactionScopeError,
    delivering,
    delivering_all,
    delivering_batch,
    keep_inbox,
    mark_published,
    pending_outbox,
    transient_database_error,
)
from driftloop.shared.discards import SequenceGaps
from driftloop.shared.events import (
    EVENTS_STREAM,
    FEEDBACK_STREAM,
    PREDICTIONS_STREAM,
    ROUTES_BUCKET,
    SPECS_BUCKET,
    Event,
    UnknownEventError,
    envelope,
    parse_envelope,
    subject_for,
)
from driftloop.shared.metrics import ConsumerCollector, ConsumerInfo
from driftloop.shared.permissions import inbox_prefix
from driftloop.shared.telemetry import (
    dropped_root,
    extract_context,
    inject_headers,
    process_span,
    send_span,
)

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

E = TypeVar("E", bound=Event)
R = TypeVar("R", bound=BaseModel)

DAY = 86_400.0
DRAIN_SECONDS = 10.0  # how long a stopping service lets its in-flight messages finish
# How long the server waits for a delivered message's ack before it redelivers it: the delay a
# killed service's message waits. A handler still working says so every ACK_WAIT / 3 seconds
# (`_keep_alive`), so long work (training, evaluation) keeps its message; the event loop must
# not stall past two thirds of it (hence the SQLite busy timeout, shared/db.py).
ACK_WAIT = 30.0
DEADLETTER_STREAM = "DRIFTLOOP_DEADLETTER"
DEADLETTER_PREFIX = "driftloop.deadletter"
# Headers of a dead letter (the payload is the original message's, unchanged).
DEAD_LETTER_SUBJECT = "Driftloop-Subject"  # the subject it was consumed from
DEAD_LETTER_STREAM = "Driftloop-Stream"
DEAD_LETTER_SEQUENCE = "Driftloop-Sequence"  # its sequence in that stream
DEAD_LETTER_DURABLE = "Driftloop-Durable"  # the consumer that gave up
DEAD_LETTER_DELIVERIES = "Driftloop-Deliveries"
DEAD_LETTER_ERROR = "Driftloop-Error"  # "<ExceptionType>: <message>", one line, truncated
MAX_ERROR_CHARS = 1000
# An event is a structured CloudEvent: the CloudEvents NATS binding reads a message without this
# header as binary mode (the payload as `data`, the attributes in headers).
CONTENT_TYPE = "Content-Type"
CLOUDEVENTS_JSON = "application/cloudevents+json"
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")

STREAMS = (
    StreamConfig(
        name=EVENTS_STREAM,
        subjects=["driftloop.events.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=600.0,
        description="the audit log: every event of every cycle, kept",
    ),
    StreamConfig(
        name=PREDICTIONS_STREAM,
        subjects=["driftloop.predictions.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * DAY,
        max_bytes=2 * 1024**3,  # DRIFTLOOP_PREDICTIONS_MAX_BYTES (stream_configs)
        discard=DiscardPolicy.OLD,
        duplicate_window=120.0,
        description="prediction records, bounded by age and bytes",
    ),
    StreamConfig(
        name=FEEDBACK_STREAM,
        subjects=["driftloop.feedback.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=90 * DAY,
        max_bytes=-1,  # DRIFTLOOP_FEEDBACK_MAX_BYTES (stream_configs)
        discard=DiscardPolicy.OLD,
        duplicate_window=120.0,
        description="delayed labels, joined to predictions by id",
    ),
    StreamConfig(
        name=DEADLETTER_STREAM,
        subjects=[f"{DEADLETTER_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=600.0,
        description="messages a consumer gave up on, with the error; kept",
    ),
)


# How often each durable consumer asks JetStream for its lag (the metrics read the answer).
CONSUMER_INFO_SECONDS = 5.0
# How often a consumer that was handed records past a jump in stream sequences asks the stream
# whether the records in between were discarded (shared/discards.py).
GAP_CHECK_SECONDS = 1.0


# The record streams' bounds and the settings that give them (docs/reliability.md, "Records
# discarded").
BOUNDS = {PREDICTIONS_STREAM: "predictions_max_bytes", FEEDBACK_STREAM: "feedback_max_bytes"}


def stream_configs(settings: Settings) -> tuple[StreamConfig, ...]:
    """STREAMS with the bounds the settings give the record streams."""
    return tuple(
        replace(c, max_bytes=getattr(settings, BOUNDS[c.name])) if c.name in BOUNDS else c
        for c in STREAMS
    )


def unnamed_bounds(settings: Settings) -> frozenset[str]:
    """The record streams whose bound these settings do not name (neither the environment nor
    the caller set it): an existing stream keeps its own. Only a process told a bound changes
    one; before, any `driftloop` command run from a shell without the variable put a bound set
    at `driftloop up` back to its default."""
    return frozenset(s for s, name in BOUNDS.items() if name not in settings.model_fields_set)


class RetryLaterError(Exception):
    """Not a failure: the handler wants the message again after `delay` seconds."""

    def __init__(self, reason: str, *, delay: float = 5.0) -> None:
        super().__init__(reason)
        self.delay = delay


def backoff(attempt: int) -> float:
    """Seconds before redelivery attempt `attempt` (1-based): 1, 2, 4 ... capped at 60."""
    return float(min(60, 2 ** max(0, attempt - 1)))


@dataclass
class Bus:
    nc: NatsClient
    js: JetStreamContext
    service: str
    streams: tuple[StreamConfig, ...] = STREAMS
    keep_bounds: frozenset[str] = frozenset()  # streams whose existing bound is kept
    metrics_port: int | None = None  # serve `metrics` there (run_until_stopped)
    metrics_host: str = "127.0.0.1"
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    # the record consumers' fetches (Settings.record_fetch, .record_linger): at most this many
    # messages, and after a fetch that did not fill, this long a rest before the next
    record_fetch: int = 50
    record_linger: float = 0.0

    def __post_init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._buckets: dict[str, KeyValue] = {}
        self._exporter: Any = None
        self._discarded_total = Counter(
            "driftloop_records_discarded",
            "records a bounded stream discarded before this durable consumer received them "
            "(counted in stream sequences: shared/discards.py)",
            ["stream", "consumer"],
            registry=self.metrics,
        )
        self.discarded: dict[str, int] = {}  # durable -> records lost since this bus started
        self._redeliveries_total = Counter(
            "driftloop_consumer_redeliveries",
            "messages this process was handed again (delivered before: a handler failed, "
            "timed out or its process stopped)",
            ["stream", "consumer"],
            registry=self.metrics,
        )
        self._dead_letters_total = Counter(
            "driftloop_dead_letters",
            "messages this process gave up on and published to the dead-letter stream",
            ["stream", "consumer"],
            registry=self.metrics,
        )
        self.consumers: dict[str, ConsumerInfo] = {}  # durable -> JetStream's last word on it
        self.metrics.register(ConsumerCollector(lambda: self.consumers))

    def serve_metrics(self) -> None:
        """Serve the registry (`metrics`) on `metrics_port`, once; no port: nothing."""
        if self.metrics_port is not None and self._exporter is None:
            try:
                self._exporter = start_http_server(
                    self.metrics_port, addr=self.metrics_host, registry=self.metrics
                )
            except OSError as exc:  # the port taken: the service goes on, without metrics
                self._exporter = False
                logger.error(
                    "metrics not served: cannot listen on their port",
                    extra={"port": self.metrics_port, "error": f"{type(exc).__name__}: {exc}"},
                )
                return
            logger.info(
                "serving metrics",
                extra={"service": self.service, "port": self.metrics_port},
            )

    # Topology ----------------------------------------------------------------------------

    async def ensure_topology(self) -> None:
        """Create (or update) the streams and the KV buckets; idempotent."""
        for config in self.streams:
            try:
                await self.js.add_stream(config)  # exists as configured here: no change
            except BadRequestError:  # exists, configured otherwise
                await self._upgrade_stream(config)
        for bucket in (ROUTES_BUCKET, SPECS_BUCKET):
            await self.kv(bucket)

    async def _upgrade_stream(self, config: StreamConfig) -> None:
        """Bring an existing stream to `config`, keeping its bound when `keep_bounds` says
        so: a stream that differs in its bound alone is left as it is. Updating is the CLI's
        right alone (permissions.py): a service refused here stops, as before."""
        if config.name in self.keep_bounds:
            existing = (await self.js.stream_info(config.name)).config
            config = replace(config, max_bytes=existing.max_bytes)
            try:
                await self.js.add_stream(config)
                return  # the same but for the bound it keeps
            except BadRequestError:
                pass
        await self.js.update_stream(config)

    async def kv(self, bucket: str) -> KeyValue:
        """The bucket's handle, looked up once per connection (a lookup is a JetStream API
        round trip; a busy server may take seconds to answer one, so timeouts are retried)."""
        if bucket in self._buckets:
            return self._buckets[bucket]
        for attempt in range(1, 4):
            try:
                try:
                    handle = await self.js.key_value(bucket)
                except (BucketNotFoundError, NotFoundError):
                    handle = await self.js.create_key_value(bucket=bucket, history=16)
            except nats.errors.TimeoutError:
                if attempt == 3:
                    raise
                logger.warning("JetStream slow to answer; retrying", extra={"bucket": bucket})
                continue
            self._buckets[bucket] = handle
            return handle
        raise AssertionError("unreachable")  # pragma: no cover

    # Publishing --------------------------------------------------------------------------

    async def publish(self, event: Event, *, event_id: str | None = None) -> str:
        """Publish an event now (control clients; services emit through their outbox)."""
        env = envelope(event, service=self.service, event_id=event_id)
        subject = subject_for(event)
        name, attributes = send_span(subject, env.id)
        with _tracer.start_as_current_span(
            name, kind=SpanKind.PRODUCER, attributes=attributes | _cycle_attr(event)
        ):
            headers = inject_headers({"Nats-Msg-Id": env.id, CONTENT_TYPE: CLOUDEVENTS_JSON})
            await self.js.publish(subject, env.model_dump_json().encode(), headers=headers)
        return env.id

    async def publish_record(self, subject: str, record: BaseModel, *, msg_id: str) -> None:
        """Publish a prediction or feedback record; waits for JetStream's ack."""
        await self.publish_raw(subject, record.model_dump_json().encode(), msg_id=msg_id)

    async def publish_raw(self, subject: str, payload: bytes, *, msg_id: str) -> None:
        """Publish a serialised record; waits for JetStream's ack."""
        name, attributes = send_span(subject, msg_id)
        if dropped_root(SpanKind.PRODUCER, attributes):  # no span, no trace context to pass
            await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
            return
        with _tracer.start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attributes):
            headers = inject_headers({"Nats-Msg-Id": msg_id})
            await self.js.publish(subject, payload, headers=headers)

    # Consuming ---------------------------------------------------------------------------

    def subscribe(
        self,
        event_type: type[E],
        handler: Callable[[E], Awaitable[None]],
        *,
        max_deliver: int = 20,
        ack_wait: float = ACK_WAIT,
        since: float | None = None,
    ) -> None:
        """Durable pull consumer `<service>-<EventType>` over every model's events of a type.
        Created with the stream's whole history, or with `since` (seconds) only the events of
        that long before its creation (a consumer added by an upgrade that must not act on
        old events); an existing durable goes on where it was either way."""
        subject = f"driftloop.events.*.{event_type.event_type()}"
        durable = f"{self.service}-{event_type.event_type()}"

        def parse(raw: bytes) -> tuple[str | None, E]:
            env, event = parse_envelope(raw)
            if not isinstance(event, event_type):
                raise UnknownEventError(f"expected {event_type.event_type()}, got {env.type}")
            return env.id, event

        self._start(
            EVENTS_STREAM, subject, durable, parse, handler, max_deliver, ack_wait, since=since
        )

    def subscribe_records(
        self,
        stream: str,
        subject: str,
        record_type: type[R],
        handler: Callable[[R], Awaitable[None]],
        *,
        durable: str,
        max_deliver: int = 20,
        ack_wait: float = ACK_WAIT,
        many: Callable[[list[tuple[str, R]]], Awaitable[None]] | None = None,
    ) -> None:
        """Durable pull consumer `<service>-<durable>` over a record stream; records the
        stream discarded before this consumer received them are counted (`discarded`, the
        `driftloop_records_discarded_total` counter) and logged. With `many`, each fetch is
        handed to it whole (each record's message id and payload; its one transaction is
        `uow.handling_all()`), and `handler` takes the records one by one only when that
        fails, so that a bad record fails alone (`_deliver_batch`)."""

        def parse(raw: bytes) -> tuple[str | None, R]:
            try:
                return None, record_type.model_validate_json(raw)
            except ValidationError as exc:
                raise UnknownEventError(f"bad {record_type.__name__}: {exc}") from exc

        name = f"{self.service}-{durable}"
        self.discarded.setdefault(name, 0)
        self._discarded_total.labels(stream=stream, consumer=name)  # the series exists at 0
        self.serve_metrics()
        self._start(
            stream,
            subject,
            name,
            parse,
            handler,
            max_deliver,
            ack_wait,
            discards=True,
            batched=True,
            many=many,
        )

    def _start(
        self,
        stream: str,
        subject: str,
        durable: str,
        parse: Callable[[bytes], tuple[str | None, Any]],
        handler: Callable[[Any], Awaitable[None]],
        max_deliver: int,
        ack_wait: float,
        *,
        discards: bool = False,
        batched: bool = False,
        many: Callable[[list[tuple[str, Any]]], Awaitable[None]] | None = None,
        since: float | None = None,
    ) -> None:
        self._tasks.append(
            asyncio.create_task(
                self._consume(
                    stream,
                    subject,
                    durable,
                    parse,
                    handler,
                    max_deliver,
                    ack_wait,
                    discards,
                    batched,
                    many,
                    since,
                ),
                name=durable,
            )
        )

    async def _consume(
        self,
        stream: str,
        subject: str,
        durable: str,
        parse: Callable[[bytes], tuple[str | None, Any]],
        handler: Callable[[Any], Awaitable[None]],
        max_deliver: int,
        ack_wait: float,
        discards: bool = False,
        batched: bool = False,
        many: Callable[[list[tuple[str, Any]]], Awaitable[None]] | None = None,
        since: float | None = None,
    ) -> None:
        """Fetch and hand over messages until stopped. `batched` (the record consumers): each
        fetch's messages are handled in one transaction (`_deliver_batch`)."""
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if since is None else DeliverPolicy.BY_START_TIME,
            opt_start_time=(
                None if since is None else datetime.now(UTC) - timedelta(seconds=since)
            ),
            # One spare delivery beyond the handler's attempts: if the process dies during the
            # last attempt, the spare one still dead-letters the message instead of dropping it.
            max_deliver=max_deliver + 1,
            ack_wait=ack_wait,
            filter_subject=subject,
            max_ack_pending=1000,
        )
        sub = await self.js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
        logger.info("consuming", extra={"durable": durable, "subject": subject})
        for counted in (self._redeliveries_total, self._dead_letters_total):
            counted.labels(stream=stream, consumer=durable)  # the series exist at 0
        self._tasks.append(
            asyncio.create_task(self._watch_consumer(stream, durable), name=f"{durable}-info")
        )
        gaps = await self._sequence_gaps(stream, durable) if discards else None
        while not self._stopping.is_set():
            if gaps is not None:
                await self._count_discards(stream, durable, gaps)
            try:
                msgs = await sub.fetch(self.record_fetch if batched else 50, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception:
                if self._stopping.is_set():
                    return
                logger.exception("fetch failed", extra={"durable": durable})
                await asyncio.sleep(1.0)
                continue
            if gaps is not None:
                for msg in msgs:
                    gaps.handed(msg.metadata.sequence.stream)
                await self._count_discards(stream, durable, gaps)
            store_down = False
            waiting = list(msgs)  # fetched, not started: kept alive while they wait their turn
            queued = asyncio.create_task(_keep_alive_queued(waiting, ack_wait))
            if batched:
                try:
                    await self._deliver_batch(
                        msgs, waiting, durable, parse, handler, max_deliver, many
                    )
                finally:
                    queued.cancel()
                if len(msgs) < self.record_fetch:
                    await self._rest()
                continue
            try:
                for msg in msgs:
                    waiting.remove(msg)
                    if self._stopping.is_set():  # not started: back to the stream now
                        with suppress(Exception):
                            await msg.nak()
                        continue
                    if store_down and msg.metadata.num_delivered < max_deliver:
                        # would wait out the same lock or outage: back, with backoff (a last
                        # attempt is still made, so a skip never costs a message its last one)
                        with suppress(Exception):
                            await msg.nak(delay=backoff(msg.metadata.num_delivered))
                        continue
                    store_down = await self._deliver(
                        msg, durable, parse, handler, max_deliver, ack_wait
                    )
            finally:
                queued.cancel()

    async def _watch_consumer(self, stream: str, durable: str) -> None:
        """Ask JetStream how far behind the consumer is, every CONSUMER_INFO_SECONDS until
        the bus stops (one small API call; a scrape reads the cached answer)."""
        while not self._stopping.is_set():
            try:
                info = await self.js.consumer_info(stream, durable)
            except Exception as exc:  # kept: the last answer stands until the next one
                logger.debug("consumer info failed", extra={"durable": durable, "error": str(exc)})
            else:
                self.consumers[durable] = ConsumerInfo(
                    stream=stream,
                    pending=info.num_pending or 0,
                    ack_pending=info.num_ack_pending or 0,
                    redelivered=info.num_redelivered or 0,
                )
            await self._pause(CONSUMER_INFO_SECONDS)

    async def _sequence_gaps(self, stream: str, durable: str) -> SequenceGaps | None:
        """Where the consumer stands in the stream: the last sequence it was handed (before
        this process started too), or, never handed any, the one before the stream's first.
        None (nothing counted) when JetStream does not say."""
        try:
            info = await self.js.consumer_info(stream, durable)
            if info.delivered is not None and info.delivered.consumer_seq:
                return SequenceGaps(last=info.delivered.stream_seq or 0)
            first = (await self.js.stream_info(stream)).state.first_seq
        except Exception as exc:
            logger.warning(
                "cannot count discarded records", extra={"durable": durable, "error": str(exc)}
            )
            return None
        return SequenceGaps(last=max(0, first - 1))

    async def _count_discards(self, stream: str, durable: str, gaps: SequenceGaps) -> None:
        """Judge the consumer's jumps against the stream's first sequence (one stream info a
        GAP_CHECK_SECONDS at most, only after a jump); count and log what was lost."""
        now = time.monotonic()
        if not gaps.pending or now - gaps.checked_at < GAP_CHECK_SECONDS:
            return
        gaps.checked_at = now
        try:
            first = (await self.js.stream_info(stream)).state.first_seq
        except Exception:  # kept for the next check
            return
        lost = gaps.lost(first)
        if lost:
            self.discarded[durable] = self.discarded.get(durable, 0) + lost
            self._discarded_total.labels(stream=stream, consumer=durable).inc(lost)
            logger.warning(
                "records discarded before they were received",
                extra={"stream": stream, "durable": durable, "lost": lost, "first_seq": first},
            )

    async def _deliver(
        self,
        msg: Msg,
        durable: str,
        parse: Callable[[bytes], tuple[str | None, Any]],
        handler: Callable[[Any], Awaitable[None]],
        max_deliver: int,
        ack_wait: float,
    ) -> bool:
        """Parse, handle, then settle: ack, nak with backoff, or dead-letter. True when the
        handler failed because the store is busy or out of reach."""
        taken = await self._take(msg, durable, parse, max_deliver)
        if taken is None:
            return False
        message_id, payload = taken
        heartbeat = asyncio.create_task(_keep_alive(msg, ack_wait))
        try:
            # the handler's one transaction is keyed on this message (`handling()`)
            with delivering(message_id), _consumer_span(msg, message_id, durable, payload) as span:
                try:
                    error = await _run(handler, payload, message_id)
                except asyncio.CancelledError:  # stopped past the drain bound: not acked,
                    with suppress(Exception):  # handed back for redelivery at once
                        await msg.nak()
                    raise
                heartbeat.cancel()
                if error is not None and not isinstance(error, RetryLaterError):
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, str(error)))
                return await self._settle(msg, durable, message_id, error, max_deliver)
        finally:
            heartbeat.cancel()

    async def _take(
        self,
        msg: Msg,
        durable: str,
        parse: Callable[[bytes], tuple[str | None, Any]],
        max_deliver: int,
    ) -> tuple[str, Any] | None:
        """The message's id (its inbox key) and payload; None once an unreadable message, or
        one at its spare delivery (see _consume), is dead-lettered."""
        try:
            event_id, payload = parse(msg.data)
        except UnknownEventError as exc:
            await self._dead_letter(msg, durable, exc)
            return None
        if msg.metadata.num_delivered > 1:
            self._redeliveries_total.labels(stream=msg.metadata.stream, consumer=durable).inc()
        if msg.metadata.num_delivered > max_deliver:
            await self._dead_letter(msg, durable, f"no outcome after {max_deliver} deliveries")
            return None
        headers = msg.headers or {}
        message_id = (
            event_id
            or headers.get("Nats-Msg-Id")
            or (f"{msg.metadata.stream}:{msg.metadata.sequence.stream}")
        )
        return message_id, payload

    async def _rest(self) -> None:
        """After a record fetch that did not fill: wait `record_linger` seconds (or until the
        bus stops) before the next fetch, so that a steady trickle of records is taken in fewer,
        larger fetches, each one transaction. Records are not requests: the wait delays what
        the monitor and the trainer see by a fraction of a second and saves each fetch's fixed
        cost (its transaction, inbox look-up and model row; docs/benchmarks.md). The first
        record after a quiet spell is taken at once: the fetch waits for it."""
        if self.record_linger > 0:
            await self._pause(self.record_linger)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if the bus stops meanwhile."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _deliver_batch(
        self,
        msgs: list[Msg],
        waiting: list[Msg],
        durable: str,
        parse: Callable[[bytes], tuple[str | None, Any]],
        handler: Callable[[Any], Awaitable[None]],
        max_deliver: int,
        many: Callable[[list[tuple[str, Any]]], Awaitable[None]] | None = None,
    ) -> None:
        """One fetch's messages in one transaction (`db.delivering_batch`), then settled one by
        one as `_deliver` settles them. With `many`, the whole fetch goes to it in one call
        (`_deliver_whole`); if that fails, nothing of it was written and the messages go to
        `handler` one by one, here: each handler's writes and inbox row are a savepoint of the
        transaction, committed together. A message whose handler failed was rolled back alone
        and is settled with its error; if the commit fails, nothing was written and every
        message is settled with that error (redelivered, or dead-lettered at its last
        attempt). After an error saying the store is busy or away, the messages not yet
        handled go back with backoff, as `_consume` does."""
        taken: list[tuple[Msg, str, Any]] = []
        for msg in msgs:  # each stays in `waiting` (kept alive) until it is settled
            took = await self._take(msg, durable, parse, max_deliver)
            if took is None:  # dead-lettered
                waiting.remove(msg)
            else:
                taken.append((msg, *took))
        if (
            many is not None
            and taken
            and not self._stopping.is_set()
            and await self._deliver_whole(taken, waiting, durable, many)
        ):
            return
        handled: list[tuple[Msg, str, Exception | None]] = []
        with delivering_batch() as batch:
            store_down = False
            for msg, message_id, payload in taken:
                if self._stopping.is_set():  # not started: back to the stream now
                    waiting.remove(msg)
                    with suppress(Exception):
                        await msg.nak()
                    continue
                if store_down and msg.metadata.num_delivered < max_deliver:
                    waiting.remove(msg)
                    with suppress(Exception):
                        await msg.nak(delay=backoff(msg.metadata.num_delivered))
                    continue
                with (
                    delivering(message_id),
                    _consumer_span(msg, message_id, durable, payload) as span,
                ):
                    try:
                        error = await _run(handler, payload, message_id)
                    except asyncio.CancelledError:  # stopped past the drain bound: none acked
                        for m in list(waiting):
                            with suppress(Exception):
                                await m.nak()
                        raise
                    if error is not None and not isinstance(error, RetryLaterError):
                        span.record_exception(error)
                        span.set_status(Status(StatusCode.ERROR, str(error)))
                handled.append((msg, message_id, error))
                store_down = error is not None and transient_database_error(error)
            try:
                batch.commit()
            except Exception as exc:  # nothing of the batch was written
                logger.warning(
                    "a batch of messages could not be committed; each goes back",
                    extra={"durable": durable, "messages": len(handled), "error": _error_text(exc)},
                )
                handled = [(msg, message_id, exc) for msg, message_id, _ in handled]
        for msg, message_id, error in handled:
            await self._settle(msg, durable, message_id, error, max_deliver)
            waiting.remove(msg)

    async def _deliver_whole(
        self,
        taken: list[tuple[Msg, str, Any]],
        waiting: list[Msg],
        durable: str,
        many: Callable[[list[tuple[str, Any]]], Awaitable[None]],
    ) -> bool:
        """The fetch handed to `many` in one call and one transaction, under one CONSUMER span
        linked to each message's publisher; acked when it committed. False (nothing written,
        nothing settled) when it failed: the caller then hands the records over one by one."""
        records = [(message_id, payload) for _, message_id, payload in taken]
        with (
            delivering_batch() as batch,
            delivering_all([message_id for message_id, _ in records]),
            _batch_span(taken, durable) as span,
        ):
            try:
                error = await _run(many, records, f"{len(records)} messages")
            except asyncio.CancelledError:  # stopped past the drain bound: none acked
                for m in list(waiting):
                    with suppress(Exception):
                        await m.nak()
                raise
            if error is None:
                try:
                    batch.commit()
                except Exception as exc:  # nothing of the batch was written
                    error = exc
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)))
        if error is not None:
            logger.info(
                "a fetch handled whole failed; its records are handled one by one",
                extra={"durable": durable, "messages": len(records), "error": _error_text(error)},
            )
            return False
        for msg, _message_id, _payload in taken:
            await msg.ack()
            waiting.remove(msg)
        return True

    async def _settle(
        self, msg: Msg, durable: str, message_id: str, error: Exception | None, max_deliver: int
    ) -> bool:
        """Ack, dead-letter or nak; True when the error says the store is busy or away."""
        attempt = msg.metadata.num_delivered
        store_down = error is not None and transient_database_error(error)
        if error is None:
            await msg.ack()
        elif attempt >= max_deliver or isinstance(error, TransactionScopeError):
            # a handler that opened two transactions: its redelivery would be acked as a repeat
            await self._dead_letter(msg, durable, error)
        elif isinstance(error, RetryLaterError):
            logger.info("retry later", extra={"message_id": message_id, "reason": str(error)})
            await msg.nak(delay=error.delay)
        elif store_down:  # expected to pass: no traceback, the reason on one line
            logger.warning(
                "database busy or unreachable; retrying",
                extra={
                    "durable": durable,
                    "message_id": message_id,
                    "attempt": attempt,
                    "retry_in_s": backoff(attempt),
                    "error": _error_text(error),
                },
            )
            await msg.nak(delay=backoff(attempt))
        else:
            logger.error(
                "handler failed",
                exc_info=error,
                extra={"durable": durable, "message_id": message_id, "attempt": attempt},
            )
            await msg.nak(delay=backoff(attempt))
        return store_down

    async def _dead_letter(self, msg: Msg, durable: str, error: BaseException | str) -> None:
        """Publish the message unchanged to the dead-letter stream, saying why; then terminate
        it. `Nats-Msg-Id` makes a re-publish after a crash harmless."""
        meta = msg.metadata
        reason = _error_text(error)
        target = f"{DEADLETTER_PREFIX}.{_model_token(msg)}.{durable}"
        headers = {
            "Nats-Msg-Id": f"{meta.stream}:{meta.sequence.stream}:dlq",
            DEAD_LETTER_SUBJECT: msg.subject,
            DEAD_LETTER_STREAM: meta.stream,
            DEAD_LETTER_SEQUENCE: str(meta.sequence.stream),
            DEAD_LETTER_DURABLE: durable,
            DEAD_LETTER_DELIVERIES: str(meta.num_delivered),
            DEAD_LETTER_ERROR: reason,
        }
        # the trace goes on; a CloudEvent stays one (the payload is unchanged)
        kept = (*_TRACE_HEADERS, CONTENT_TYPE)
        headers |= {k: v for k, v in (msg.headers or {}).items() if k in kept}
        # a handler's traceback helps; a parse error's does not
        crashed = error if isinstance(error, Exception) else None
        logger.error(
            "message dead-lettered",
            exc_info=None if isinstance(crashed, UnknownEventError) else crashed,
            extra={
                "durable": durable,
                "subject": msg.subject,
                "error": reason,
                "deliveries": meta.num_delivered,
                "dead_letter_subject": target,
            },
        )
        try:
            await self.js.publish(target, msg.data, headers=headers)
        except Exception:
            logger.exception("dead-lettering failed", extra={"durable": durable})
            await msg.nak(delay=backoff(meta.num_delivered))  # the spare delivery tries again
            return
        self._dead_letters_total.labels(stream=meta.stream, consumer=durable).inc()
        await msg.term()

    # Outbox relay ------------------------------------------------------------------------

    def start_relay(self, uow: SqlUnitOfWork) -> None:
        """Run the unit of work's messaging upkeep until the bus stops: the outbox relay, and
        the inbox retention (rows older than `uow.inbox_retention` deleted hourly)."""
        self._tasks.append(
            asyncio.create_task(
                relay_outbox(self, uow.engine, uow.messaging, uow.committed, self._stopping),
                name=f"{self.service}-outbox",
            )
        )
        self._tasks.append(
            asyncio.create_task(keep_inbox(uow, self._stopping), name=f"{self.service}-inbox")
        )

    # Request-reply -----------------------------------------------------------------------

    async def respond(
        self, subject: str, handler: Callable[[bytes], Awaitable[dict[str, Any]]]
    ) -> None:
        """Answer requests on `subject` with a JSON document (shared by the replicas)."""

        async def on_request(msg: Msg) -> None:
            try:
                answer = await handler(msg.data)
            except Exception as exc:
                logger.exception("request failed", extra={"subject": subject})
                answer = {"error": str(exc)}
            await msg.respond(json.dumps(answer, default=str).encode())

        await self.nc.subscribe(subject, queue=f"{self.service}-rpc", cb=on_request)

    async def request(
        self, subject: str, payload: dict[str, Any] | None = None, *, timeout: float = 2.0
    ) -> dict[str, Any]:
        reply = await self.nc.request(subject, json.dumps(payload or {}).encode(), timeout=timeout)
        result: dict[str, Any] = json.loads(reply.data)
        return result

    # Life cycle --------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        self.serve_metrics()
        await self.respond(f"driftloop.rpc.ping.{self.service}", _pong(self.service))
        logger.info("ready", extra={"service": self.service})
        await self._stopping.wait()

    async def close(self, *, drain: float = DRAIN_SECONDS) -> None:
        """Stop taking messages and drain: the message each consumer is handling may finish
        (and be acked) within `drain` seconds; messages fetched but not started are naked so
        they are redelivered at once; a handler still running at the bound is cancelled, its
        transaction rolls back and its message, never acked, is redelivered."""
        self._stopping.set()
        if self._exporter:  # False: it could not listen
            server, _thread = self._exporter
            server.shutdown()
            server.server_close()
            self._exporter = None
        if self._tasks:
            _done, late = await asyncio.wait(self._tasks, timeout=drain)
            if late:
                logger.warning(
                    "drain bound reached; cancelling", extra={"tasks": [t.get_name() for t in late]}
                )
            for task in late:
                task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        with suppress(Exception):
            await self.nc.flush(timeout=2)  # the last acks and naks reach the server
        with suppress(Exception):
            await self.nc.close()


def _pong(service: str) -> Callable[[bytes], Awaitable[dict[str, Any]]]:
    async def pong(_data: bytes) -> dict[str, Any]:
        return {"service": service, "state": "running"}

    return pong


def _cycle_attr(payload: Any) -> dict[str, str]:
    cycle = getattr(payload, "cycle_id", None)
    model = getattr(payload, "model", None)
    attrs = {"driftloop.model": str(model)} if model else {}
    if cycle:
        attrs["driftloop.cycle_id"] = str(cycle)
    return attrs


_TRACE_HEADERS = ("traceparent", "tracestate")


def _consumer_span(msg: Msg, message_id: str, durable: str, payload: Any) -> Any:
    """The consumer span of one message's handling, a child of its publisher's."""
    name, attributes = process_span(msg.subject, message_id, durable)
    return _tracer.start_as_current_span(
        name,
        context=extract_context(msg.headers or {}),
        kind=SpanKind.CONSUMER,
        attributes=attributes | _cycle_attr(payload),
    )


def _batch_span(taken: list[tuple[Msg, str, Any]], durable: str) -> Any:
    """The consumer span of a fetch handled whole: `process <subject>` of its first message,
    with the batch's size and a link to each message's publisher whose trace was kept (the
    conventions' batch receive)."""
    first, message_id, payload = taken[0]
    name, attributes = process_span(first.subject, message_id, durable)
    attributes = attributes | _cycle_attr(payload)
    attributes["messaging.batch.message_count"] = len(taken)  # type: ignore[assignment]
    del attributes["messaging.message.id"]  # one per message: in the links
    links = []
    for msg, _id, _payload in taken:
        context = trace.get_current_span(extract_context(msg.headers or {})).get_span_context()
        if context.is_valid and context.trace_flags.sampled:  # no link to a dropped trace
            links.append(trace.Link(context, {"messaging.message.id": _id}))
    return _tracer.start_as_current_span(
        name, kind=SpanKind.CONSUMER, attributes=attributes, links=links
    )


async def _run(
    handler: Callable[[Any], Awaitable[None]], payload: Any, message_id: str
) -> Exception | None:
    """Call the handler: None when it is done (or the message is a repeat), else its error."""
    try:
        await handler(payload)
    except DuplicateMessageError:
        logger.debug("duplicate ignored", extra={"message_id": message_id})
    except Exception as exc:
        return exc
    return None


def _error_text(error: BaseException | str) -> str:
    """`Type: message` on one ASCII line (a header value), at most MAX_ERROR_CHARS long."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split()).encode("ascii", "backslashreplace").decode()
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _model_token(msg: Msg) -> str:
    """The model a message is about, as a subject token: its envelope's `subject`, else the
    third token of the subject it came on (`driftloop.<kind>.<model>...`), else `_`."""
    try:
        doc = json.loads(msg.data)
    except ValueError:
        doc = None
    tokens = msg.subject.split(".")
    candidates = (
        doc.get("subject") if isinstance(doc, dict) else None,
        tokens[2] if len(tokens) > 2 else None,
    )
    for candidate in candidates:
        if isinstance(candidate, str) and _TOKEN.fullmatch(candidate):
            return candidate
    return "_"


async def _keep_alive(msg: Msg, ack_wait: float) -> None:
    """Tell the server a long handler (training) is still working, so it does not redeliver."""
    with suppress(asyncio.CancelledError, Exception):
        while True:
            await asyncio.sleep(max(1.0, ack_wait / 3))
            await msg.in_progress()


async def _keep_alive_queued(waiting: list[Msg], ack_wait: float) -> None:
    """The same for the fetched messages still waiting behind the one in hand: a long handler
    must not make them outlive their ack wait and come back as extra deliveries."""
    with suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(max(1.0, ack_wait / 3))
            for msg in list(waiting):
                with suppress(Exception):
                    await msg.in_progress()


async def relay_outbox(
    bus: Bus,
    engine: Engine,
    messaging: Messaging,
    committed: asyncio.Event,
    stopping: asyncio.Event,
) -> None:
    """Publish committed outbox rows in order; `Nats-Msg-Id` makes a re-publish harmless."""
    while not stopping.is_set():
        committed.clear()
        try:
            rows = pending_outbox(engine, messaging)
            for row in rows:
                stored = json.loads(row.headers)
                name, attributes = send_span(row.subject, row.event_id)
                # The send span is a child of the handler that emitted the event, so the
                # cycle's trace runs through the outbox; the header carries this span onwards.
                with _tracer.start_as_current_span(
                    name,
                    context=extract_context(stored),
                    kind=SpanKind.PRODUCER,
                    attributes=attributes,
                ):
                    headers = inject_headers(
                        {"Nats-Msg-Id": row.event_id, CONTENT_TYPE: CLOUDEVENTS_JSON}
                    )
                    await bus.js.publish(row.subject, row.payload.encode(), headers=headers)
                mark_published(engine, messaging, [row.seq])
        except Exception as exc:
            if transient_database_error(exc):  # the store busy or away: no traceback a second
                logger.warning(
                    "outbox relay: database busy or unreachable; retrying",
                    extra={"service": bus.service, "error": _error_text(exc)},
                )
            else:
                logger.exception("outbox relay failed; retrying")
            await asyncio.sleep(1.0)
            continue
        if len(rows) == 100:
            continue
        with suppress(TimeoutError):
            await asyncio.wait_for(committed.wait(), timeout=1.0)


@asynccontextmanager
async def connect_bus(
    settings: Settings, *, service: str, ensure: bool = True
) -> AsyncIterator[Bus]:
    """Connect to NATS (reconnecting forever), create the topology, close cleanly."""
    url = settings.resolved_nats_url()

    async def on_error(exc: Exception) -> None:
        logger.warning("nats error", extra={"error": str(exc)})

    nc = await nats.connect(
        url,
        name=f"driftloop-{service}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=on_error,
        inbox_prefix=inbox_prefix(url),  # the only inbox its NATS user may subscribe to
    )
    bus = Bus(
        nc,
        nc.jetstream(),
        service,
        streams=stream_configs(settings),
        keep_bounds=unnamed_bounds(settings),
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        record_fetch=settings.record_fetch,
        record_linger=settings.record_linger,
    )
    try:
        if ensure:
            await bus.ensure_topology()
        yield bus
    finally:
        await bus.close()
