"""The monitor's own tables: per-model reference, window and trigger state; decisions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from driftloop.shared.db import UtcDateTime, messaging_tables
from driftloop.shared.events import PredictionBatch
from driftloop.shared.profile import ReferenceProfile
from driftloop.shared.samples import samples_table

SERVICE = "monitor"
metadata = sa.MetaData()
messaging = messaging_tables(metadata, SERVICE)
models = sa.Table(
    "monitor_models",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("reference_version", sa.String(32), nullable=True),
    sa.Column("reference_run_id", sa.String(64), nullable=True),
    # unused since migration 0006 (monitor_profiles): rewriting the reference with every
    # batch's update of this row cost the ingest as much as the rest of the update
    sa.Column("profile", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("window", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("last_drift", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("last_retrain_at", UtcDateTime(), nullable=True),
    sa.Column("open_cycle_id", sa.String(64), nullable=True),
    sa.Column("rows_seen", sa.BigInteger, nullable=False, default=0),
    sa.Column("labels_since_eval", sa.Integer, nullable=False, default=0),
    sa.Column("last_performance", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("labels_since_retrain", sa.Integer, nullable=False, default=0),
    sa.Column("reference_at", UtcDateTime(), nullable=True),
    # the champion's open drift/performance episodes (domain.episode.Episodes), migration 0010
    sa.Column("episodes", sa.JSON(none_as_null=True), nullable=True),
    # the live metric's newest evaluations, oldest first (migration 0014; the console's chart)
    sa.Column("performance_history", sa.JSON(none_as_null=True), nullable=True),
)
samples = samples_table(metadata, SERVICE)
# the retention's order (migration 0005): newest answers first, per model
sa.Index("ix_monitor_samples_predicted_at", samples.c.model, samples.c.predicted_at)
version_stats = sa.Table(
    "monitor_version_stats",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("route", sa.String(16), primary_key=True),
    sa.Column("stats", sa.JSON, nullable=False),
    sa.Column("since", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)
decisions = sa.Table(
    "monitor_decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(64), nullable=False, index=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("fired", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("cycle_id", sa.String(64), nullable=True),
)
# The reference profile of each model's champion, written once per deployment (migration 0006).
profiles = sa.Table(
    "monitor_profiles",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("profile", sa.JSON, nullable=False),
)
# The drift window's reservoir segments (domain.reservoir), apart from the window's row so a
# batch appends what it adds instead of rewriting the whole sample (migration 0006). Keyed by
# (model, the window's rows before the batch), clustered on SQLite (no rowid, no second index:
# one b-tree written per batch).
window_samples = sa.Table(
    "monitor_window_samples",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("segments", sa.JSON, nullable=False),  # {feature: [segment, ...]}
    # the predictions' [segment, ...] (migration 0007)
    sa.Column("prediction", sa.JSON(none_as_null=True), nullable=True),
    sqlite_with_rowid=False,
)
# The label window (migration 0007): labels come late and in their own batches, so they fill
# a window of their own, its reservoir inline; `last_drift` is its last closed window's figures.
label_windows = sa.Table(
    "monitor_label_windows",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("window", sa.JSON, nullable=False),
    sa.Column("last_drift", sa.JSON(none_as_null=True), nullable=True),
)
# Drift windows of the versions serving beside the champion (a canary), one per (model,
# version), migration 0008. Each is judged against the version's own training profile
# (`profile`, written when its evaluation passed) or, without one, the champion's reference
# (`reference_run_id` names the run whose profile it is). The champion's own window stays in
# monitor_models, whose trigger state it feeds.
version_windows = sa.Table(
    "monitor_version_windows",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("reference_run_id", sa.String(64), nullable=True),
    sa.Column("reference_version", sa.String(32), nullable=True),
    sa.Column("profile", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("window", sa.JSON, nullable=False),
    sa.Column("last_drift", sa.JSON(none_as_null=True), nullable=True),
)
# Their reservoir segments, as monitor_window_samples holds the champion window's.
version_window_samples = sa.Table(
    "monitor_version_window_samples",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("segments", sa.JSON, nullable=False),
    sa.Column("prediction", sa.JSON(none_as_null=True), nullable=True),
    sqlite_with_rowid=False,
)
# A shadow's answers that came before the champion's to the same requests (migration 0011):
# compared once the champion's record comes, dropped after SHADOW_PAIR_WAIT.
shadow_answers = sa.Table(
    "monitor_shadow_answers",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("prediction", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("at", UtcDateTime(), nullable=False),
)
sa.Index("ix_monitor_shadow_answers_at", shadow_answers.c.at)
# The alerts outbox (migration 0012; queries in adapters/alerts.py): one row per (event,
# destination), written in the transaction that handles the event, sent by the delivery worker.
alerts = sa.Table(
    "monitor_alerts",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("destination", sa.String(128), nullable=False),  # the url_env variable's name
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", UtcDateTime(), nullable=False),  # not tried again before
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("sent_at", UtcDateTime(), nullable=True),
    sa.Column("given_up_at", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("event_id", "destination", name="uq_monitor_alerts_event_destination"),
)
sa.Index("ix_monitor_alerts_pending", alerts.c.sent_at, alerts.c.given_up_at)
# The cycles the monitor saw start and end (migration 0013; queries in adapters/cycles.py).
cycles = sa.Table(
    "monitor_cycles",
    metadata,
    sa.Column("cycle_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=True),
    sa.Column("started_at", UtcDateTime(), nullable=True),  # RetrainRequested.requested_at
    sa.Column("ended_at", UtcDateTime(), nullable=True),  # when its end was handled
    sa.Column("outcome", sa.String(32), nullable=True),  # the ending event's type
)
VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def load(conn: Connection, model: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(models).where(models.c.model == model)).mappings().first()
    return dict(row) if row else None


# Statements of the per-batch path, built once: building one per call (its where clause and
# cache key) cost the monitor a tenth of its time per batch.
_LOAD_STATE = sa.select(*[c for c in models.c if c.name != "profile"]).where(
    models.c.model == sa.bindparam("_model")
)
_APPEND_SAMPLES = window_samples.insert()
_UPDATE_MODEL = models.update().where(models.c.model == sa.bindparam("_model"))
_LOAD_STATS = sa.select(version_stats.c.stats, version_stats.c.since).where(
    version_stats.c.model == sa.bindparam("_model"),
    version_stats.c.version == sa.bindparam("_version"),
    version_stats.c.route == sa.bindparam("_route"),
)
_UPDATE_STATS = (
    version_stats.update()
    .where(
        version_stats.c.model == sa.bindparam("_model"),
        version_stats.c.version == sa.bindparam("_version"),
        version_stats.c.route == sa.bindparam("_route"),
    )
    .values(stats=sa.bindparam("stats"), updated_at=sa.bindparam("updated_at"))
)


def load_state(conn: Connection, model: str) -> dict[str, Any] | None:
    """The model's row without its reference profile (read that through `Profiles`)."""
    row = conn.execute(_LOAD_STATE, {"_model": model}).mappings().first()
    return dict(row) if row else None


class Profiles:
    """Reference profiles, parsed once per MLflow run that logged them: a run's profile
    never changes (a new reference is a new run), so the monitor need not read and validate
    it for every batch. Keeps the last `size` (one or two per model)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._by_run: dict[str, ReferenceProfile] = {}

    def get(
        self, conn: Connection, model: str, run_id: str | None, *, version: str | None = None
    ) -> ReferenceProfile | None:
        """The champion's reference profile, or with `version` that serving version's own
        (None when it has none)."""
        if run_id is not None and run_id in self._by_run:
            return self._by_run[run_id]
        if version is None:
            query = sa.select(profiles.c.profile).where(profiles.c.model == model)
        else:
            query = sa.select(version_windows.c.profile).where(
                version_windows.c.model == model, version_windows.c.version == version
            )
        raw = conn.execute(query).scalar()
        if raw is None:
            return None
        profile = ReferenceProfile.model_validate(raw)
        if run_id is not None:
            if len(self._by_run) >= self.size:
                self._by_run.pop(next(iter(self._by_run)))  # the oldest
            self._by_run[run_id] = profile
        return profile


def save_profile(conn: Connection, model: str, profile: dict[str, Any]) -> None:
    """Insert or replace the model's reference profile."""
    done = conn.execute(profiles.update().where(profiles.c.model == model).values(profile=profile))
    if done.rowcount == 0:
        conn.execute(profiles.insert().values(model=model, profile=profile))


def save(conn: Connection, model: str, **values: Any) -> None:
    """Insert or update the model's row (only the given columns change)."""
    done = conn.execute(_UPDATE_MODEL, {"_model": model, **values})
    if done.rowcount == 0:
        values = {"rows_seen": 0, "labels_since_eval": 0, "labels_since_retrain": 0} | values
        conn.execute(models.insert().values(model=model, **values))


def _segments_of(model: str, version: str | None) -> tuple[sa.Table, list[Any]]:
    """Where a window's reservoir segments live: the champion window's (`version` None) or a
    serving version's; the table and its key's conditions."""
    if version is None:
        return window_samples, [window_samples.c.model == model]
    table = version_window_samples
    return table, [table.c.model == model, table.c.version == version]


_APPEND_VERSION_SAMPLES = version_window_samples.insert()


def append_window_samples(
    conn: Connection,
    model: str,
    seq: int,
    samples: dict[str, list[str]],
    prediction: list[str] | None = None,
    *,
    version: str | None = None,
) -> None:
    """Append a batch's new reservoir segments, the features' and the predictions', as one
    row (none when there are none); `seq` orders the rows of a window: its rows before the
    batch. `version` names a serving version's window; None the champion's."""
    segments = {name: parts for name, parts in samples.items() if parts}
    if segments or prediction:
        statement = _APPEND_SAMPLES if version is None else _APPEND_VERSION_SAMPLES
        key = {"model": model} if version is None else {"model": model, "version": version}
        conn.execute(
            statement, {**key, "seq": seq, "segments": segments, "prediction": prediction or None}
        )


def window_samples_of(
    conn: Connection, model: str, *, version: str | None = None
) -> dict[str, list[str]]:
    """Every reservoir segment of the model's open window, per feature, in the order added."""
    table, where = _segments_of(model, version)
    out: dict[str, list[str]] = {}
    rows = conn.execute(sa.select(table.c.segments).where(*where).order_by(table.c.seq))
    for (segments,) in rows:
        for name, parts in segments.items():
            out.setdefault(name, []).extend(parts)
    return out


def prediction_samples_of(conn: Connection, model: str, *, version: str | None = None) -> list[str]:
    """Every reservoir segment of the predictions in the model's open window, in order."""
    table, where = _segments_of(model, version)
    rows = conn.execute(
        sa.select(table.c.prediction)
        .where(*where, table.c.prediction.is_not(None))
        .order_by(table.c.seq)
    )
    return [part for (parts,) in rows for part in parts or []]


def clear_window_samples(conn: Connection, model: str, *, version: str | None = None) -> None:
    table, where = _segments_of(model, version)
    conn.execute(sa.delete(table).where(*where))


# Windows of the versions serving beside the champion ----------------------------------------

_VERSION_WINDOW_ROW = [c for c in version_windows.c if c.name != "profile"]  # profile: Profiles
_LOAD_VERSION_WINDOW = sa.select(*_VERSION_WINDOW_ROW).where(
    version_windows.c.model == sa.bindparam("_model"),
    version_windows.c.version == sa.bindparam("_version"),
)


def load_version_window(conn: Connection, model: str, version: str) -> dict[str, Any] | None:
    """A serving version's window row without its profile (read that through `Profiles`)."""
    row = conn.execute(_LOAD_VERSION_WINDOW, {"_model": model, "_version": version})
    found = row.mappings().first()
    return dict(found) if found else None


def version_windows_of(conn: Connection, model: str) -> list[dict[str, Any]]:
    """Every serving version's window row of the model (without profiles)."""
    rows = conn.execute(
        sa.select(*_VERSION_WINDOW_ROW)
        .where(version_windows.c.model == model)
        .order_by(version_windows.c.version)
    )
    return [dict(r) for r in rows.mappings()]


def save_version_window(conn: Connection, model: str, version: str, **values: Any) -> None:
    """Insert or update a serving version's window row (only the given columns change)."""
    key = [version_windows.c.model == model, version_windows.c.version == version]
    done = conn.execute(version_windows.update().where(*key).values(**values))
    if done.rowcount == 0:
        conn.execute(
            version_windows.insert().values(
                model=model, version=version, **({"window": {}} | values)
            )
        )


def drop_version_windows(conn: Connection, model: str) -> None:
    """A new champion: the other versions' windows (and their samples) go."""
    for table in (version_windows, version_window_samples):
        conn.execute(sa.delete(table).where(table.c.model == model))


def load_label_window(conn: Connection, model: str) -> dict[str, Any] | None:
    """The model's label window row (`window`, `last_drift`), or None."""
    row = (
        conn.execute(sa.select(label_windows).where(label_windows.c.model == model))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def save_label_window(conn: Connection, model: str, **values: Any) -> None:
    """Insert or update the model's label window row (only the given columns change)."""
    done = conn.execute(
        label_windows.update().where(label_windows.c.model == model).values(**values)
    )
    if done.rowcount == 0:
        conn.execute(label_windows.insert().values(model=model, **({"window": {}} | values)))


def last_decision(conn: Connection, model: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.select(decisions)
            .where(decisions.c.model == model)
            .order_by(decisions.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def decided(conn: Connection, model: str, cycle_id: str) -> bool:
    """Whether this monitor's decision started cycle `cycle_id`."""
    query = sa.select(decisions.c.id).where(
        decisions.c.model == model, decisions.c.cycle_id == cycle_id
    )
    return conn.execute(query.limit(1)).first() is not None


def labelled_of_version(
    conn: Connection, model: str, version: str, *, limit: int, since: datetime | None = None
) -> list[sa.Row[Any]]:
    """The newest joined (prediction, label) pairs served by `version` (predicted at or after
    `since` when given)."""
    where = [
        samples.c.model == model,
        samples.c.version == version,
        samples.c.label.is_not(None),
        samples.c.prediction.is_not(None),
    ]
    if since is not None:
        where.append(samples.c.predicted_at >= since)
    return list(
        conn.execute(
            sa.select(
                samples.c.prediction,
                samples.c.label,
                samples.c.labelled_at,
                samples.c.predicted_at,
            )
            .where(*where)
            .order_by(samples.c.labelled_at.desc())
            .limit(limit)
        )
    )


def load_stats(conn: Connection, model: str, version: str, route: str) -> dict[str, Any] | None:
    row = conn.execute(_LOAD_STATS, {"_model": model, "_version": version, "_route": route}).first()
    return {"stats": row.stats, "since": row.since} if row else None


def save_stats(
    conn: Connection, model: str, version: str, route: str, stats: dict[str, Any], at: datetime
) -> None:
    done = conn.execute(
        _UPDATE_STATS,
        {"_model": model, "_version": version, "_route": route, "stats": stats, "updated_at": at},
    )
    if done.rowcount == 0:
        conn.execute(
            version_stats.insert().values(
                model=model, version=version, route=route, stats=stats, since=at, updated_at=at
            )
        )


def stats_of_version(conn: Connection, model: str, version: str) -> list[sa.Row[Any]]:
    return list(
        conn.execute(
            sa.select(version_stats.c.route, version_stats.c.stats, version_stats.c.since).where(
                version_stats.c.model == model, version_stats.c.version == version
            )
        )
    )


IN_CHUNK = 500
"""Ids per `IN (...)` of one query: a fetch's ids are looked up in a few queries, each well
under every driver's bound parameter limit (SQLite's 32,766, PostgreSQL's 65,535)."""


def _chunks(ids: list[str]) -> list[list[str]]:
    """The distinct ids, IN_CHUNK at a time."""
    distinct = list(dict.fromkeys(ids))
    return [distinct[k : k + IN_CHUNK] for k in range(0, len(distinct), IN_CHUNK)]


def champion_answers(conn: Connection, model: str, ids: list[str]) -> dict[str, Any]:
    """The served (champion or canary) answers recorded for these prediction ids."""
    found: dict[str, Any] = {}
    for part in _chunks(ids):
        rows = conn.execute(
            sa.select(samples.c.id, samples.c.prediction).where(
                samples.c.model == model,
                samples.c.id.in_(part),
                samples.c.prediction.is_not(None),
            )
        )
        found.update((r.id, r.prediction) for r in rows)
    return found


class HeldAnswer(NamedTuple):
    """A shadow's answer waiting for the champion's answer to the same request."""

    id: str
    version: str
    prediction: Any
    at: datetime


def hold_shadow_answers(conn: Connection, model: str, answers: list[HeldAnswer]) -> None:
    """Keep shadow answers whose champion answers have not come yet (a repeat of an id
    replaces its answer, in this call as across calls)."""
    latest = {a.id: a for a in answers}
    if not latest:
        return
    for part in _chunks(list(latest)):
        conn.execute(
            shadow_answers.delete().where(
                shadow_answers.c.model == model, shadow_answers.c.id.in_(part)
            )
        )
    conn.execute(
        shadow_answers.insert(),
        [
            {
                "model": model,
                "id": a.id,
                "version": a.version,
                "prediction": a.prediction,
                "at": a.at,
            }
            for a in latest.values()
        ],
    )


def take_shadow_answers(conn: Connection, model: str, ids: list[str]) -> list[sa.Row[Any]]:
    """The held shadow answers to these requests (id, version, prediction), deleted."""
    columns = (shadow_answers.c.id, shadow_answers.c.version, shadow_answers.c.prediction)
    taken: list[sa.Row[Any]] = []
    for part in _chunks(ids):
        where = (shadow_answers.c.model == model, shadow_answers.c.id.in_(part))
        rows: list[sa.Row[Any]] = list(conn.execute(sa.select(*columns).where(*where)))
        if rows:
            conn.execute(shadow_answers.delete().where(*where))
            taken.extend(rows)
    return taken


def holds_shadow_answers(conn: Connection, model: str) -> bool:
    found = conn.execute(
        sa.select(shadow_answers.c.id).where(shadow_answers.c.model == model).limit(1)
    ).first()
    return found is not None


def drop_shadow_answers_before(conn: Connection, cutoff: datetime) -> int:
    """Held shadow answers whose champion answer never came (or went before they did)."""
    return conn.execute(shadow_answers.delete().where(shadow_answers.c.at < cutoff)).rowcount


# Served answers, for the join with labels --------------------------------------------------


def record_served(conn: Connection, batch: PredictionBatch) -> int:
    """Store the answers of a served batch (not a shadow's) for the join with their labels.

    The monitor keeps no inputs here (they go to the drift window's counters): the live
    metric and the shadow comparison need the id, version, answer and time only. The upsert
    is shared.samples' (a label that came first keeps its half of the row), run as one
    statement over the rows (executemany), not a VALUES list compiled anew for every batch;
    on SQLite straight on the driver with the values converted as the column types convert
    them (the time once per batch), which stores the same text SQLAlchemy would."""
    if batch.error or batch.route == "shadow":
        return 0
    pairs = list(zip(batch.ids, batch.predictions, strict=False))
    if not pairs:
        return 0
    dialect = conn.dialect
    if dialect.name == "sqlite":
        as_json, as_time = _sqlite_converters(dialect)
        at = as_time(batch.at)
        conn.exec_driver_sql(
            _SQLITE_SERVED,
            [(batch.model, i, as_json(p), batch.version, at) for i, p in pairs],
        )
    else:
        rows = [
            {
                "model": batch.model,
                "id": i,
                "prediction": p,
                "version": batch.version,
                "predicted_at": batch.at,
            }
            for i, p in pairs
        ]
        conn.execute(_served_upsert(dialect.name), rows)
    return len(pairs)


_SERVED = ("prediction", "version", "predicted_at")


@functools.cache
def _sqlite_converters(dialect: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """The column types' own conversions to what SQLite stores (JSON text, UTC timestamp)."""
    as_json = samples.c.prediction.type.dialect_impl(dialect).bind_processor(dialect)
    as_time = samples.c.predicted_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert as_json is not None  # both convert on SQLite
    assert as_time is not None
    return as_json, as_time


# SQLite: the statement as SQLAlchemy compiles it, run on the driver (executemany of tuples),
# values converted by the columns' own types (above): per-row parameter processing was a third
# of the monitor's time per batch.
_SQLITE_SERVED = (
    f"INSERT INTO {samples.name} (model, id, prediction, version, predicted_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (model, id) DO UPDATE SET "
    "prediction = excluded.prediction, version = excluded.version, "
    "predicted_at = excluded.predicted_at"
)


@functools.cache
def _served_upsert(dialect: str) -> Any:
    if dialect != "postgresql":  # pragma: no cover - SQLite has its own path (above)
        raise RuntimeError(f"unsupported database {dialect}")
    stmt = postgresql.insert(samples)
    return stmt.on_conflict_do_update(
        index_elements=["model", "id"], set_={c: stmt.excluded[c] for c in _SERVED}
    )


# Retention of the samples table ------------------------------------------------------------


def known_models(conn: Connection) -> list[str]:
    """Every model the monitor keeps state for."""
    return [str(m) for m in conn.execute(sa.select(models.c.model)).scalars()]


def sample_models(conn: Connection) -> list[str]:
    """Every model the monitor may hold samples of (from its small tables, not a scan of the
    samples)."""
    query = sa.union(sa.select(version_stats.c.model), sa.select(models.c.model))
    return [str(m) for m in conn.execute(query).scalars()]


def samples_cutoff(conn: Connection, model: str, *, keep: int, oldest: datetime) -> datetime:
    """The time before which the model's samples go: the answer time of its `keep`+1-th
    newest answer, or `oldest`, whichever is later."""
    nth = conn.execute(
        sa.select(samples.c.predicted_at)
        .where(samples.c.model == model, samples.c.predicted_at.is_not(None))
        .order_by(samples.c.predicted_at.desc())
        .limit(1)
        .offset(keep)
    ).scalar()
    return max(nth, oldest) if nth is not None else oldest


def delete_samples_before(conn: Connection, model: str, cutoff: datetime, *, limit: int) -> int:
    """Delete up to `limit` of the model's samples from before `cutoff`: answers given before
    it, and labels whose answer never came (or is gone) labelled before it. Returns how many."""
    deleted = 0
    for older in (
        samples.c.predicted_at < cutoff,
        sa.and_(samples.c.predicted_at.is_(None), samples.c.labelled_at < cutoff),
    ):
        ids = sa.select(samples.c.id).where(samples.c.model == model, older)
        done = conn.execute(
            sa.delete(samples).where(
                samples.c.model == model, samples.c.id.in_(ids.limit(limit - deleted))
            )
        )
        deleted += done.rowcount
        if deleted >= limit:
            break
    return deleted
