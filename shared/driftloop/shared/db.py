"""Each service's own store: engine, migrations, inbox (idempotency) and outbox (atomic emit).

SQLite by default (one file per service under HOME, WAL mode); with DRIFTLOOP_DATABASE_URL one
PostgreSQL database whose tables carry their service's prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError

from driftloop.shared.events import Event, envelope, subject_for
from driftloop.shared.telemetry import inject_headers

logger = logging.getLogger(__name__)
R = TypeVar("R")

# How long a statement waits for another connection's write lock on a SQLite file before it
# fails with "database is locked". Handlers run their statements on the event loop, so the
# wait stops the whole service: it must stay well under the in-progress heartbeat interval
# (ack_wait / 3, 10 s by default) or long handlers lose their messages. Ordinary contention (a
# CLI, the inbox retention's batch) lasts milliseconds; a longer lock fails the handler, which
# is a transient error (see `transient_database_error`) the bus retries by redelivery.
SQLITE_BUSY_TIMEOUT = 5.0  # seconds
# The inbox's retention: see `prune_inbox` for why a week is safe.
INBOX_RETENTION = timedelta(days=7)
INBOX_PRUNE_INTERVAL = 3600.0  # seconds between two passes
INBOX_PRUNE_BATCH = 500  # rows per transaction: the write lock is held for milliseconds


@dataclass
class Delivery:
    """The message the bus is handing to a handler: its id (the inbox key) and whether the
    handler has opened the message's one transaction yet."""

    message_id: str
    opened: bool = False
    # a whole fetch handed to one handler (`delivering_all`, `handling_all()`): every id
    message_ids: tuple[str, ...] | None = None
    # writes added to the message's transaction by a wrapper of the handler (`also_write`)
    also: list[Callable[[Tx], None]] = field(default_factory=list)


# The delivery in hand, set by the bus around each handler call (`delivering`). A handler's
# copies of the context (`asyncio.to_thread`, tasks) share the same `Delivery`.
_delivery: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar(
    "driftloop_delivery", default=None
)


@contextlib.contextmanager
def delivering(message_id: str) -> Iterator[Delivery]:
    """Around one handler call (the bus's): the message whose one transaction `handling()`
    opens."""
    delivery = Delivery(message_id)
    token = _delivery.set(delivery)
    try:
        yield delivery
    finally:
        _delivery.reset(token)


@contextlib.contextmanager
def delivering_all(message_ids: list[str]) -> Iterator[Delivery]:
    """Around one call of a handler given a whole fetch (the bus's, inside
    `delivering_batch`): the messages whose one transaction `handling_all()` opens."""
    delivery = Delivery(f"{len(message_ids)} messages", message_ids=tuple(message_ids))
    token = _delivery.set(delivery)
    try:
        yield delivery
    finally:
        _delivery.reset(token)


class Batch:
    """Messages of one fetch handled in one transaction (the bus's record consumers, inside
    `delivering_batch`): each message's `handling()` is a savepoint of it (its writes and its
    inbox row, rolled back alone when its handler fails), and `commit` commits them all.

    A transaction that spans several handlers spans their awaits, so the unit of work's write
    lock is held from the first `handling()` until `commit` or `close`: the process's other
    transactions wait their turn on the event loop instead of blocking it on SQLite's lock
    (which the batch, stuck behind them, could then never release)."""

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self._uow: SqlUnitOfWork | None = None
        self._outer: Any = None
        self._committed = False
        self.emitted = False

    async def connection(self, uow: SqlUnitOfWork) -> Connection:
        if self._uow is not None and self._uow is not uow:
            raise TransactionScopeError("one batch of messages writes to one store")
        if self.conn is None:
            await uow.writing.acquire()
            try:
                self.conn = uow.engine.connect()
                self._outer = self.conn.begin()
            except BaseException:
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                uow.writing.release()
                raise
            self._uow = uow
        return self.conn

    def commit(self) -> None:
        """Commit what the batch's handlers wrote (nothing, when none opened a transaction)."""
        if self.conn is None:
            return
        try:
            self._outer.commit()
            self._committed = True
        finally:
            self.close()
        if self.emitted and self._uow is not None:
            self._uow.committed.set()

    def close(self) -> None:
        """Roll back what is not committed; free the connection and the write lock."""
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        try:
            if self._outer is not None and not self._committed:
                # also after a failed commit (inactive then, but its BEGIN is still open)
                with contextlib.suppress(Exception):
                    self._outer.rollback()
        finally:
            conn.close()
            if self._uow is not None:
                self._uow.writing.release()


_batch: contextvars.ContextVar[Batch | None] = contextvars.ContextVar(
    "driftloop_batch", default=None
)


@contextlib.contextmanager
def delivering_batch() -> Iterator[Batch]:
    """Around the handling of one fetch's messages (the bus's): their transactions become
    savepoints of one, committed by `Batch.commit` (rolled back if the block ends without)."""
    batch = Batch()
    token = _batch.set(batch)
    try:
        yield batch
    finally:
        _batch.reset(token)
        batch.close()


def also_write(write: Callable[[Tx], None]) -> None:
    """Have `write(tx)` run in the one transaction of the message in hand (`handling()`),
    after the handler's own writes and before its inbox row: what a wrapper of a handler adds
    to its effects (the monitor's alerts of the event it handles), committed with them or not
    at all, and not again for a repeat. Before the handler opens its transaction only."""
    delivery = _delivery.get()
    if delivery is None or delivery.message_ids is not None:
        raise TransactionScopeError("also_write() outside the handling of one message")
    if delivery.opened:
        raise TransactionScopeError(
            f"also_write() after the transaction of message {delivery.message_id} was opened"
        )
    delivery.also.append(write)


def opened() -> bool:
    """Whether the handler of the message in hand opened its transaction (`handling()`)."""
    delivery = _delivery.get()
    return delivery is not None and delivery.opened


def current_message_id() -> str | None:
    """The id of the message being handled; None outside a handler."""
    delivery = _delivery.get()
    return delivery.message_id if delivery is not None else None


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite hands back naive ones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: driftloop stores aware UTC datetimes only")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DuplicateMessageError(Exception):
    """This message was already handled (its inbox row exists); ack it and do nothing."""


class TransactionScopeError(RuntimeError):
    """A programming error, raised before anything is written: a handler opens exactly one
    transaction for the message in hand, `handling()` (two would commit the inbox row with the
    first one's writes, and the second would then fail as a duplicate: its writes lost and the
    message acked), and code outside a handler (timers, commands) opens `transaction()`. The
    bus dead-letters the message at once: no redelivery can mend it."""


def make_engine(url: str, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT) -> Engine:
    """An engine; SQLite files get WAL mode, a busy timeout (seconds) and their folder;
    PostgreSQL pools test a connection before handing it out (a restarted server closed them)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": busy_timeout})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # the timeout first: switching to WAL takes the lock, so it waits like any write
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
            # Let SQLAlchemy own transactions, DDL included (so a failed migration rolls back).
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


# SQLite's words for another connection holding the lock (SQLITE_BUSY, SQLITE_LOCKED).
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


def transient_database_error(error: BaseException) -> bool:
    """Whether `error` (or an exception it was raised from) says the store is busy or out of
    reach for now, so the same work will succeed later: a SQLite file locked by another
    connection past the busy timeout (or a WAL snapshot gone stale under a concurrent
    writer), or a PostgreSQL connection lost or refused (a restart, a failover). Handlers do
    not catch these; the bus redelivers the message with backoff."""
    for exc in _chain(error):
        if isinstance(exc, DisconnectionError):
            return True
        if not isinstance(exc, DBAPIError):
            continue
        if exc.connection_invalidated:
            return True
        if isinstance(exc.orig, sqlite3.OperationalError):
            return any(word in str(exc.orig) for word in _SQLITE_BUSY)
        if isinstance(exc, OperationalError):  # PostgreSQL: connection refused, lost, shut down
            return True
    return False


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


# Alembic keeps its running migration in a module-global context, and MLflow migrates its own
# store with Alembic when a client first opens it: two migrations at once in one process (the
# in-process tests run every service in one) would cross. Every migration takes this lock.
MIGRATION_LOCK = threading.Lock()


def migrate(engine: Engine, *, service: str, versions: Path) -> None:
    """Bring the service's tables to the newest revision (idempotent, safe at every start)."""
    with MIGRATION_LOCK:
        _migrate(engine, service=service, versions=versions)


def _migrate(engine: Engine, *, service: str, versions: Path) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("version_locations", str(versions))
    cfg.attributes["version_table"] = f"{service}_alembic_version"
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


# Inbox and outbox tables, one pair per service ---------------------------------------------


@dataclass(frozen=True)
class Messaging:
    inbox: sa.Table
    outbox: sa.Table


def messaging_tables(metadata: sa.MetaData, service: str) -> Messaging:
    inbox = sa.Table(
        f"{service}_inbox",
        metadata,
        sa.Column("message_id", sa.String(64), primary_key=True),
        sa.Column("handled_at", UtcDateTime(), nullable=False),
    )
    # the retention's order: without it a prune batch scans the inbox holding the write lock
    sa.Index(f"ix_{service}_inbox_handled_at", inbox.c.handled_at)
    outbox = sa.Table(
        f"{service}_outbox",
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("published_at", UtcDateTime(), nullable=True, index=True),
    )
    return Messaging(inbox, outbox)


def create_inbox_index(op: Any, service: str) -> None:
    """For a migration: the index the inbox retention deletes by (messaging_tables')."""
    op.create_index(f"ix_{service}_inbox_handled_at", f"{service}_inbox", ["handled_at"])


def create_messaging_tables(op: Any, service: str) -> None:
    """For a service's first migration: its inbox and outbox."""
    op.create_table(
        f"{service}_inbox",
        sa.Column("message_id", sa.String(64), primary_key=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        f"{service}_outbox",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(f"ix_{service}_outbox_published_at", f"{service}_outbox", ["published_at"])


# Unit of work ------------------------------------------------------------------------------


@dataclass
class Tx:
    """One transaction: the handler's writes, the inbox row and the events to emit."""

    conn: Connection
    service: str
    messaging: Messaging
    now: Callable[[], datetime]
    emitted: list[str] = field(default_factory=list)

    def emit(self, event: Event, *, headers: dict[str, str] | None = None) -> str:
        """Queue an event in the outbox; it is published after the transaction commits."""
        env = envelope(event, service=self.service, at=self.now())
        self.conn.execute(
            self.messaging.outbox.insert().values(
                event_id=env.id,
                subject=subject_for(event),
                payload=env.model_dump_json(),
                headers=json.dumps(inject_headers(headers)),
                created_at=self.now(),
            )
        )
        self.emitted.append(env.id)
        return env.id


class SqlUnitOfWork:
    """Handler writes + inbox row + outbox rows in one transaction."""

    def __init__(
        self,
        engine: Engine,
        *,
        service: str,
        messaging: Messaging,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        inbox_retention: timedelta = INBOX_RETENTION,
    ) -> None:
        self.engine = engine
        self.service = service
        self.messaging = messaging
        self.now = now
        self.inbox_retention = inbox_retention
        self.committed = asyncio.Event()  # wakes the outbox relay
        # one write transaction at a time in this process (see Batch)
        self.writing = asyncio.Lock()
        self._inbox_insert = messaging.inbox.insert()  # built once: compiled once

    def already_handled(self, message_id: str | None = None) -> bool:
        message_id = message_id or current_message_id()
        if message_id is None:
            return False
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(self.messaging.inbox.c.message_id).where(
                    self.messaging.inbox.c.message_id == message_id
                )
            ).first()
        return row is not None

    @asynccontextmanager
    async def handling(self) -> AsyncIterator[Tx]:
        """The one transaction of the message in hand: the handler's writes, the message's
        inbox row and the events it emits commit together; a repeat raises
        DuplicateMessageError (the bus acks it). Once per delivery: a second call, or a call
        outside a handler, raises TransactionScopeError before opening anything."""
        delivery = _delivery.get()
        if delivery is None:
            raise TransactionScopeError(
                "handling() outside a handler: no message is in hand (use transaction())"
            )
        if delivery.opened:
            raise TransactionScopeError(
                f"a second transaction for message {delivery.message_id}: a handler's writes "
                "and events for one message go in one handling() block"
            )
        delivery.opened = True
        batch = _batch.get()
        if batch is not None:  # a savepoint of the batch's one transaction
            conn = await batch.connection(self)
            with conn.begin_nested():
                tx = Tx(conn, self.service, self.messaging, self.now)
                yield tx
                for write in delivery.also:
                    write(tx)
                self._claim(conn, delivery.message_id)
            batch.emitted = batch.emitted or bool(tx.emitted)
            return
        async with self.writing:
            with self.engine.connect() as conn, conn.begin():
                tx = Tx(conn, self.service, self.messaging, self.now)
                yield tx
                for write in delivery.also:
                    write(tx)
                self._claim(conn, delivery.message_id)
        if tx.emitted:
            self.committed.set()

    @asynccontextmanager
    async def handling_all(
        self, records: Sequence[tuple[str, R]]
    ) -> AsyncIterator[tuple[Tx, list[R]]]:
        """The one transaction of a whole fetch handed to one handler (`records`: each message's
        id and payload, as the bus handed them): yields it with the payloads not handled before,
        in order (a repeat, or a second message with an id already in the fetch, left out); their
        inbox rows are written with the handler's writes. Once per delivery, inside the bus's
        batch only; anything else raises TransactionScopeError before opening anything."""
        delivery = _delivery.get()
        batch = _batch.get()
        if delivery is None or delivery.message_ids is None or batch is None:
            raise TransactionScopeError("handling_all() outside a handler of a whole fetch")
        if delivery.opened:
            raise TransactionScopeError(
                f"a second transaction for {delivery.message_id}: one handling_all() block"
            )
        if tuple(message_id for message_id, _ in records) != delivery.message_ids:
            raise TransactionScopeError("handling_all() takes the records the bus handed over")
        delivery.opened = True
        conn = await batch.connection(self)
        seen = self._handled_ids(conn, delivery.message_ids)
        fresh: list[R] = []
        claimed: list[dict[str, Any]] = []
        now = self.now()
        for message_id, payload in records:
            if message_id in seen:
                continue
            seen.add(message_id)
            fresh.append(payload)
            claimed.append({"message_id": message_id, "handled_at": now})
        tx = Tx(conn, self.service, self.messaging, self.now)
        yield tx, fresh
        if claimed:
            conn.execute(self._inbox_insert, claimed)
        batch.emitted = batch.emitted or bool(tx.emitted)

    def _handled_ids(self, conn: Connection, message_ids: Sequence[str]) -> set[str]:
        """Which of `message_ids` have an inbox row already."""
        column = self.messaging.inbox.c.message_id
        found: set[str] = set()
        for start in range(0, len(message_ids), 500):
            chunk = list(message_ids[start : start + 500])
            found.update(conn.execute(sa.select(column).where(column.in_(chunk))).scalars())
        return found

    def _claim(self, conn: Connection, message_id: str) -> None:
        """The message's inbox row; a repeat raises DuplicateMessageError, which rolls back the
        message's transaction (or savepoint) with everything the handler wrote."""
        try:
            conn.execute(self._inbox_insert, {"message_id": message_id, "handled_at": self.now()})
        except IntegrityError as exc:
            raise DuplicateMessageError(message_id) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A transaction outside message handling (timers, RPC); may emit too. A handler's
        one transaction is `handling()`: here it raises TransactionScopeError."""
        delivery = _delivery.get()
        if delivery is not None:
            raise TransactionScopeError(
                f"transaction() while handling message {delivery.message_id}: its writes would "
                "commit without the message's inbox row (use handling(), once)"
            )
        async with self.writing:
            with self.engine.connect() as conn, conn.begin():
                tx = Tx(conn, self.service, self.messaging, self.now)
                yield tx
        if tx.emitted:
            self.committed.set()


# Inbox retention ---------------------------------------------------------------------------


def prune_inbox(
    engine: Engine,
    messaging: Messaging,
    *,
    older_than: datetime,
    batch: int = INBOX_PRUNE_BATCH,
) -> int:
    """Delete inbox rows handled before `older_than`, `batch` rows per transaction (each holds
    the write lock for milliseconds, so handlers barely wait); the number deleted.

    Why forgetting a handled message is safe: the inbox only has to recognise a message that
    comes again, and after its row is written one comes again only
    - by JetStream redelivery, which ends with the ack (sent right after the commit; lost, it
      costs one `ack_wait`, 30-120 s) and in any case within `max_deliver` deliveries spaced by
      the backoff (at most 60 s) or the ack wait: minutes for most consumers, under a day for
      the trainer's 1000 deliveries;
    - by a publisher's outbox relay sending it again (it crashed between publish and mark):
      JetStream drops a repeat `Nats-Msg-Id` within the stream's duplicate window (2-10
      minutes), and the inbox catches a later one as long as its row is kept, i.e. unless the
      publisher stays down between its publish and its mark longer than the retention.
    A week is far longer than both. What the inbox never guarded is a replay: a durable
    consumer deleted and created again starts from the stream's first message; its ack floor,
    not the inbox, is what stops that."""
    inbox = messaging.inbox
    oldest = (
        sa.select(inbox.c.message_id)
        .where(inbox.c.handled_at < older_than)
        .limit(sa.bindparam("_batch"))
        .scalar_subquery()
    )
    delete = inbox.delete().where(inbox.c.message_id.in_(oldest))
    deleted = 0
    while True:
        with engine.begin() as conn:
            count = conn.execute(delete, {"_batch": batch}).rowcount
        deleted += count
        if count < batch:
            return deleted


async def keep_inbox(
    uow: SqlUnitOfWork, stopping: asyncio.Event, *, interval: float = INBOX_PRUNE_INTERVAL
) -> None:
    """Every `interval` seconds (and once at start), delete the inbox rows older than the unit
    of work's `inbox_retention`, in a thread so handlers keep running; until `stopping`."""
    while not stopping.is_set():
        cutoff = uow.now() - uow.inbox_retention
        try:
            deleted = await asyncio.to_thread(
                prune_inbox, uow.engine, uow.messaging, older_than=cutoff
            )
        except Exception as exc:
            if not transient_database_error(exc):
                logger.exception("inbox retention failed; next pass later")
            else:  # the store busy or away: expected to pass, no traceback
                logger.warning(
                    "inbox retention: database busy or unreachable; next pass later",
                    extra={"service": uow.service, "error": f"{type(exc).__name__}: {exc}"},
                )
        else:
            if deleted:
                logger.info(
                    "inbox rows pruned",
                    extra={
                        "service": uow.service,
                        "deleted": deleted,
                        "before": cutoff.isoformat(),
                    },
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=interval)


def pending_outbox(engine: Engine, messaging: Messaging, *, limit: int = 100) -> list[sa.Row[Any]]:
    ob = messaging.outbox
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(ob.c.seq, ob.c.event_id, ob.c.subject, ob.c.payload, ob.c.headers)
                .where(ob.c.published_at.is_(None))
                .order_by(ob.c.seq)
                .limit(limit)
            )
        )


def mark_published(engine: Engine, messaging: Messaging, seqs: list[int]) -> None:
    ob = messaging.outbox
    with engine.begin() as conn:
        conn.execute(ob.update().where(ob.c.seq.in_(seqs)).values(published_at=datetime.now(UTC)))


def new_id() -> str:
    return str(uuid.uuid4())


def ordered_id() -> str:
    """A time-ordered id (RFC 9562 UUID version 7: milliseconds since the epoch, then 74
    random bits). Prediction ids are keys of every samples table: inserting ordered keys
    costs SQLite about a fifth of random ones (bench/bench_ingest.py)."""
    ms = time.time_ns() // 1_000_000
    rand = secrets.randbits(74)
    return str(
        uuid.UUID(
            int=(ms << 80) | (7 << 76) | ((rand >> 62) << 64) | (2 << 62) | (rand & (2**62 - 1))
        )
    )
