"""The monitor's handlers: windows of live inputs (and the champion's predictions), drift,
the label window, and the retrain decision."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from mlflow import MlflowClient
from opentelemetry import context as otel_context
from opentelemetry import trace
from sqlalchemy.engine import Connection

from driftloop.monitor.adapters.cycles import cycle_ended, cycle_started
from driftloop.monitor.adapters.loaded import LabelWindows, Loaded, stored_window
from driftloop.monitor.adapters.store import (
    Profiles,
    append_window_samples,
    clear_window_samples,
    decided,
    decisions,
    delete_samples_before,
    drop_version_windows,
    known_models,
    labelled_of_version,
    last_decision,
    load,
    load_label_window,
    load_state,
    load_version_window,
    prediction_samples_of,
    record_served,
    sample_models,
    samples,
    samples_cutoff,
    save,
    save_label_window,
    save_profile,
    save_version_window,
    stats_of_version,
    version_windows_of,
    window_samples_of,
)
from driftloop.monitor.comparisons import compare_shadows, drop_unpaired
from driftloop.monitor.domain.drift import (
    DriftReport,
    Window,
    add_batch,
    add_labels,
    compact,
    compaction_due,
    drift_report,
    label_report,
    pending_window,
    window_due,
)
from driftloop.monitor.domain.episode import (
    Episode,
    EpisodeKind,
    Episodes,
    cycle_failed,
    episode_status,
    observe,
    stalled_event,
)
from driftloop.monitor.domain.live import (
    VersionStats,
    add_request,
    summary,
)
from driftloop.monitor.domain.performance import (
    live_metric,
    metric_standard_error,
    onset_of_drop,
    with_evaluation,
)
from driftloop.monitor.domain.policy import (
    RetrainDecision,
    TriggerState,
    decide_on_performance,
    decide_on_schedule,
    decide_on_volume,
    decide_retrain,
    worse_than_floor,
)
from driftloop.shared.db import SqlUnitOfWork, Tx, new_id
from driftloop.shared.events import (
    Deployed,
    DriftDetected,
    EvaluationPassed,
    Event,
    FeedbackBatch,
    PerformanceDegraded,
    PredictionBatch,
    RetrainRequested,
    RolledBack,
    Trigger,
)
from driftloop.shared.profile import PREDICTION, ReferenceProfile
from driftloop.shared.registry import read_json_artifact
from driftloop.shared.samples import record_labels
from driftloop.shared.service import SpecSource
from driftloop.shared.spec import ModelSpec, MonitorSpec

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
PROFILE_ARTIFACT = "data/reference_profile.json"  # logged by the trainer with each run
PRUNE_BATCH = 10_000  # samples deleted per transaction, so ingest interleaves


async def on_predictions(
    batch: PredictionBatch,
    *,
    uow: SqlUnitOfWork,
    specs: SpecSource,
    now: Callable[[], datetime],
    profiles: Profiles | None = None,
) -> None:
    """Count every served batch per version; add the served inputs to the drift window of
    the version that answered (the champion's, or a canary's own) and judge the window when it
    closes: once it has `monitor.window` rows (this batch included), or, when
    `monitor.window_time` has passed since its first row, before this batch joins."""
    spec_of = await _specs_of([batch.model], specs)
    async with uow.handling() as tx:
        _served(tx, [batch], spec_of, profiles or Profiles(), now=now)


async def _specs_of(models: Iterable[str], specs: SpecSource) -> dict[str, ModelSpec | None]:
    """The spec of each model a delivery names, asked once per model."""
    return {model: await specs.get(model) for model in dict.fromkeys(models)}


async def on_all_predictions(
    records: list[tuple[str, PredictionBatch]],
    *,
    uow: SqlUnitOfWork,
    specs: SpecSource,
    now: Callable[[], datetime],
    profiles: Profiles | None = None,
) -> None:
    """A fetch of prediction records at once: what `on_predictions` does for each in turn,
    in one transaction (`_served`). The bus falls back to `on_predictions` one by one if this
    fails."""
    spec_of = await _specs_of((batch.model for _, batch in records), specs)
    async with uow.handling_all(records) as (tx, fresh):
        _served(tx, fresh, spec_of, profiles or Profiles(), now=now)


def _served(
    tx: Tx,
    batches: list[PredictionBatch],
    spec_of: dict[str, ModelSpec | None],
    profiles: Profiles,
    *,
    now: Callable[[], datetime],
) -> None:
    """Served batches in turn, with each model's row and each version's stats read once and
    written once (`Loaded`), and consecutive champion batches of a model added to its window
    together (a run): a run is cut wherever the window closes, so it closes after the same
    batch as when each is handled alone."""
    loaded = Loaded(tx.conn)
    runs: dict[str, list[PredictionBatch]] = {}
    for batch in batches:
        spec = spec_of[batch.model]
        state = _counted(tx, loaded, batch)
        if spec is None or state is None:
            continue
        if batch.route != "champion":
            _version_batch(tx, batch, spec, state, profiles, now=now())
            continue
        run = runs.setdefault(batch.model, [])
        if run and window_due(
            pending_window(loaded.window(batch.model), _rows(run), run[0].at),
            spec.monitor,
            at=batch.at,
        ):  # the window closes by time before this batch: the run so far joins first
            _champion_batch(tx, loaded, run, spec, state, profiles, now=now())
            run.clear()
        run.append(batch)
        window = loaded.window(batch.model)
        if window.rows + _rows(run) >= spec.monitor.window or window_due(
            window, spec.monitor, at=run[0].at
        ):  # it closes after this batch, or before the run's first: judged now
            _champion_batch(tx, loaded, run, spec, state, profiles, now=now())
            run.clear()
    for model, run in runs.items():
        state, spec = loaded.state(model), spec_of[model]
        if run and state is not None and spec is not None:  # a run has both
            _champion_batch(tx, loaded, run, spec, state, profiles, now=now())
    compare_shadows(tx, loaded, batches)  # after every served answer here is recorded
    loaded.flush(at=now())


def _rows(run: list[PredictionBatch]) -> int:
    return sum(len(batch.instances) for batch in run)


def _counted(tx: Tx, loaded: Loaded, batch: PredictionBatch) -> dict[str, Any] | None:
    """Count a served batch and keep its answers; the model's row when its inputs go on to a
    window (not a shadow's, not a failure's)."""
    count_served(loaded, batch)
    if batch.route == "shadow" or batch.error:
        return None
    record_served(tx.conn, batch)
    return loaded.state(batch.model)


def _champion_batch(
    tx: Tx,
    loaded: Loaded,
    run: list[PredictionBatch],
    spec: ModelSpec,
    state: dict[str, Any],
    profiles: Profiles,
    *,
    now: datetime,
) -> None:
    """The champion's window: its drift is what DriftDetected and the retrain policy read.
    `run`: consecutive records of the model added together (one, or a fetch's run that no
    window boundary cuts)."""
    batch = run[0]
    profile = profiles.get(tx.conn, batch.model, state["reference_run_id"])
    if profile is None:
        return  # no reference yet: nothing to compare against
    if len(run) > 1:
        batch = batch.model_copy(
            update={
                "ids": [i for b in run for i in b.ids],
                "instances": [inst for b in run for inst in b.instances],
                "predictions": [p for b in run for p in b.predictions],
                "at": run[-1].at,
            }
        )
    # stored without its reservoir segments: add_batch gives this batch's, appended below
    window = loaded.window(batch.model)
    values: dict[str, Any] = {"rows_seen": (state["rows_seen"] or 0) + len(batch.instances)}
    window, reports = _advance(
        tx, WindowKey(batch.model), window, profile, batch, spec, first_at=run[0].at
    )
    for report in reports:
        values |= _on_champion_report(tx, batch.model, report, spec, state | values, now=now)
    loaded.save(batch.model, window=window, **values)


def _version_batch(
    tx: Tx,
    batch: PredictionBatch,
    spec: ModelSpec,
    state: dict[str, Any],
    profiles: Profiles,
    *,
    now: datetime,
) -> None:
    """A canary's window, judged against its own training profile (or, without one, the
    champion's reference): reported in the status and the version's live stats, never a
    trigger (a canary serves while a cycle is open)."""
    key = WindowKey(batch.model, batch.version)
    row = load_version_window(tx.conn, batch.model, batch.version)
    if row is None:  # no profile of its own came (a version not evaluated by us)
        row = {
            "reference_run_id": state["reference_run_id"],
            "reference_version": state["reference_version"],
            "window": {},
        }
    profile = profiles.get(tx.conn, batch.model, row["reference_run_id"], version=batch.version)
    profile = profile or profiles.get(tx.conn, batch.model, state["reference_run_id"])
    if profile is None:
        return
    window = Window.model_validate(row["window"] or {})
    window, reports = _advance(tx, key, window, profile, batch, spec)
    values: dict[str, Any] = {}
    for report in reports:
        values["last_drift"] = _version_summary(batch.model, key, report, row, now=now)
    save_version_window(
        tx.conn,
        batch.model,
        batch.version,
        window=stored_window(window),
        reference_run_id=row["reference_run_id"],
        reference_version=row["reference_version"],
        **values,
    )


@dataclass(frozen=True)
class WindowKey:
    """Which window: the champion's (`version` None) or a serving version's."""

    model: str
    version: str | None = None


def _advance(
    tx: Tx,
    key: WindowKey,
    window: Window,
    profile: ReferenceProfile,
    batch: PredictionBatch,
    spec: ModelSpec,
    *,
    first_at: datetime | None = None,
) -> tuple[Window, list[DriftReport]]:
    """The batch joins the window (its reservoir segments appended); a window past its time
    is judged first, a full one after. Returns the open window and the reports judged.
    Records joined together: `batch` their concatenation, at the last one's time, `first_at`
    the first's (the time the window's closing by time is judged at)."""
    reports = []
    if window_due(window, spec.monitor, at=first_at or batch.at):  # by time, before this batch
        reports.append(_judge(tx, key, profile, window, spec))
        window = Window()
    before = window.rows
    window = add_batch(
        window,
        profile,
        batch.instances,
        batch.at,
        predictions=batch.predictions,
        first_at=first_at,
    )
    append_window_samples(
        tx.conn,
        key.model,
        before,
        window.samples,
        _prediction_segments(window),
        version=key.version,
    )
    if not reports and window.rows >= spec.monitor.window:
        reports.append(_judge(tx, key, profile, window, spec))
        window = Window()
    elif compaction_due(window):
        window = _compact(tx, key, window)
    return window, reports


def _prediction_segments(window: Window) -> list[str]:
    return window.prediction.samples.get(PREDICTION, []) if window.prediction else []


def _with_samples(tx: Tx, key: WindowKey, window: Window) -> Window:
    """The window with all its stored reservoir segments, the features' and the predictions'."""
    found = window_samples_of(tx.conn, key.model, version=key.version)
    window = window.model_copy(update={"samples": found})
    if window.prediction is not None:
        segments = {PREDICTION: prediction_samples_of(tx.conn, key.model, version=key.version)}
        prediction = window.prediction.model_copy(update={"samples": segments})
        window = window.model_copy(update={"prediction": prediction})
    return window


def _compact(tx: Tx, key: WindowKey, window: Window) -> Window:
    """Fold the window's stored reservoir segments, so they stay bounded."""
    full = compact(_with_samples(tx, key, window))
    clear_window_samples(tx.conn, key.model, version=key.version)
    append_window_samples(
        tx.conn, key.model, 0, full.samples, _prediction_segments(full), version=key.version
    )
    return full


def _judge(
    tx: Tx, key: WindowKey, profile: ReferenceProfile, window: Window, spec: ModelSpec
) -> DriftReport:
    """The drift report of a closed window, with its stored reservoir segments (which go)."""
    window = _with_samples(tx, key, window)
    clear_window_samples(tx.conn, key.model, version=key.version)
    report = drift_report(profile, window, spec.monitor.drift)
    if report.prediction is not None and report.prediction.drifted:
        logger.info(
            "prediction drift",
            extra={
                "model": key.model,
                "version": key.version,
                "psi": report.prediction.psi,
                "rows": report.rows,
            },
        )
    return report


def _summary(report: DriftReport, *, now: datetime) -> dict[str, Any]:
    """What the status shows of a judged window: its bounds and every figure per feature."""
    summary: dict[str, Any] = _jsonable(
        {
            "rows": report.rows,
            "window_start": report.start,
            "window_end": report.end,
            "drifted_features": report.drifted,
            "at": now,
            "features": {
                f.feature: f.model_dump(mode="json", exclude={"feature"}) for f in report.features
            },
            "prediction": report.prediction.model_dump(mode="json") if report.prediction else None,
            "counts": report.counts,  # rows per reference bin, per feature (the console)
        }
    )
    return summary


def _version_summary(
    model: str, key: WindowKey, report: DriftReport, row: dict[str, Any], *, now: datetime
) -> dict[str, Any]:
    own = row["reference_version"] == key.version
    logger.info(
        "version drift" if report.drifted else "version window judged",
        extra={
            "model": model,
            "version": key.version,
            "drifted_features": report.drifted,
            "rows": report.rows,
            "reference_version": row["reference_version"],
        },
    )
    summary: dict[str, Any] = _summary(report, now=now) | {
        "version": key.version,
        "reference_version": row["reference_version"],
        "reference": "own training set" if own else "champion's training set",
    }
    return summary


def _on_champion_report(
    tx: Tx,
    model: str,
    report: DriftReport,
    spec: ModelSpec,
    state: dict[str, Any],
    *,
    now: datetime,
) -> dict[str, Any]:
    """A judged champion window: a drifted one opens or continues the drift episode, reported
    (DriftDetected) on its first window and every `monitor.event_every` after, and takes the
    retrain decision; one that did not drift ends the episode. Returns the model-state
    columns that change."""
    values: dict[str, Any] = {
        "last_drift": _summary(report, now=now)
        | {"version": state["reference_version"], "reference_version": state["reference_version"]}
    }
    return values | _episode_window(
        tx,
        model,
        "drift",
        state,
        spec,
        holds=bool(report.drifted),
        start=report.start or now,
        event=lambda episode: DriftDetected(
            model=model,
            window_start=report.start or now,
            window_end=report.end or now,
            rows=report.rows,
            reference_version=state["reference_version"],
            features=report.features,
            drifted_features=report.drifted,
            prediction=report.prediction,
            episode_start=episode.start,
            episode_windows=episode.windows,
        ),
        decide=lambda trigger: decide_retrain(report, trigger, spec.monitor, now=now),
        now=now,
    )


def _episode_window(
    tx: Tx,
    model: str,
    kind: EpisodeKind,
    state: dict[str, Any],
    spec: ModelSpec,
    *,
    holds: bool,
    start: datetime,
    event: Callable[[Episode], Event],
    decide: Callable[[TriggerState], RetrainDecision],
    labels: int | None = None,
    now: datetime,
) -> dict[str, Any]:
    """A judged window (drift) or evaluation (performance) of the champion: the condition
    `holds` or not. Opens, continues or ends the episode of that `kind`; emits its `event`
    on the windows folding reports; takes the retrain decision on every window it holds
    (recorded once while suppressed the same way). Returns the model-state columns that
    change."""
    episodes = Episodes.load(state["episodes"])
    seen = observe(
        episodes.get(kind), kind, holds=holds, start=start, every=spec.monitor.event_every
    )
    episode = seen.episode
    values: dict[str, Any] = {}
    if episode is not None and seen.report:
        episode = replace(episode, event_id=tx.emit(event(episode)))
    if episode is not None:
        decision = decide(_trigger_state(state, episode, labels=labels))
        if _worth_recording(tx, model, kind, decision):
            values = _record_decision(tx, model, kind, decision, episode=episode, now=now)
            episode = replace(episode, cycle_id=values.get("open_cycle_id", episode.cycle_id))
    return values | {"episodes": episodes.put(kind, episode).dump() or None}


def count_served(loaded: Loaded, batch: PredictionBatch) -> None:
    """Per-version live stats: requests, rows, errors, latency (a shadow's disagreement with
    the champion is counted per fetch, `compare_shadows`)."""
    stats = loaded.stats(batch.model, batch.version, batch.route)
    stats = add_request(
        stats,
        rows=len(batch.ids),
        latency_ms=batch.latency_ms,
        failed=batch.error is not None,
        part=batch.part,
    )
    loaded.put_stats(batch.model, batch.version, batch.route, stats)


async def version_status(
    model: str,
    version: str,
    *,
    uow: SqlUnitOfWork,
    specs: SpecSource,
    since: datetime | None = None,
) -> dict[str, Any]:
    """What the deployer's analysis reads: the version's live stats per route (counters since
    the version first served on that route; the deployer diffs them against the figures it
    saw when a stage started), and its metric on labelled traffic predicted since `since`."""
    spec = await specs.get(model)
    metric = spec.monitor.performance.metric if spec else "accuracy"
    with uow.engine.connect() as conn:
        routes = stats_of_version(conn, model, version)
        labelled = labelled_of_version(
            conn, model, version, limit=spec.monitor.window if spec else 2000, since=since
        )
        window = load_version_window(conn, model, version)
    truth, answers = [r.label for r in labelled], [r.prediction for r in labelled]
    figure = live_metric(metric, truth, answers) if labelled else None
    se = metric_standard_error(metric, truth, answers)
    answer: dict[str, Any] = _jsonable(
        {
            "model": model,
            "version": version,
            "routes": {
                r.route: {**summary(VersionStats.model_validate(r.stats)), "since": r.since}
                for r in routes
            },
            "metric": {"name": metric, "figure": figure, "labels": len(labelled), "se": se},
            "drift": _version_window_status(window) if window else None,
        }
    )
    return answer


def _trigger_state(
    state: dict[str, Any], episode: Episode | None = None, *, labels: int | None = None
) -> TriggerState:
    """The trigger state of the model's row; with the condition's `episode`, its failed
    attempts and the labels since the last attempt started (`labels`, when this batch's are
    not in the row yet)."""
    since = (state["labels_since_retrain"] or 0) if labels is None else labels
    return TriggerState(
        state["last_retrain_at"],
        state["open_cycle_id"],
        failed_attempts=episode.failed if episode else 0,
        labels_since_attempt=since,
    )


def _record_decision(
    tx: Tx,
    model: str,
    trigger: Trigger,
    decision: RetrainDecision,
    *,
    cause_id: str | None = None,
    episode: Episode | None = None,
    now: datetime,
) -> dict[str, Any]:
    """Record the decision (fired or suppressed, and why); when it fires, start the cycle in
    a trace of its own (for an `episode`'s trigger: caused by its last event, with its onset
    and attempt number). Returns the model-state columns that change."""
    if episode is not None:
        cause_id = episode.event_id
    cycle_id = new_id() if decision.fire else None
    logger.info(
        "retrain decision",
        extra={
            "model": model,
            "trigger": trigger,
            "fired": decision.fire,
            "reason": decision.reason,
            "cycle_id": cycle_id,
        },
    )
    tx.conn.execute(
        sa.insert(decisions).values(
            model=model,
            at=now,
            trigger=trigger,
            fired=decision.fire,
            reason=decision.reason,
            cycle_id=cycle_id,
        )
    )
    if cycle_id is None:
        return {}
    # A cycle is its own trace: a new root span, not a child of the message that caused it.
    with _tracer.start_as_current_span(
        "retrain cycle",
        context=otel_context.Context(),
        attributes={"driftloop.cycle_id": cycle_id, "driftloop.model": model},
    ):
        tx.emit(
            RetrainRequested(
                model=model,
                cycle_id=cycle_id,
                trigger=trigger,
                reason=decision.reason,
                cause_id=cause_id,
                requested_at=now,
                onset=episode.start if episode else None,
                attempt=episode.failed + 1 if episode else 1,
            )
        )
    return {"open_cycle_id": cycle_id, "last_retrain_at": now, "labels_since_retrain": 0}


async def on_feedback(
    batch: FeedbackBatch,
    *,
    uow: SqlUnitOfWork,
    specs: SpecSource,
    now: Callable[[], datetime],
    profiles: Profiles | None = None,
) -> None:
    """Join labels to predictions; add the new ones to the label window (judged, reported
    only, at `monitor.window` labels); every `min_labels` new labels of the champion, judge
    its live metric against the spec's floor."""
    spec_of = await _specs_of([batch.model], specs)
    async with uow.handling() as tx:
        _labelled(tx, [batch], spec_of, profiles or Profiles(), now=now)


async def on_all_feedback(
    records: list[tuple[str, FeedbackBatch]],
    *,
    uow: SqlUnitOfWork,
    specs: SpecSource,
    now: Callable[[], datetime],
    profiles: Profiles | None = None,
) -> None:
    """A fetch of label records at once: what `on_feedback` does for each in turn, in one
    transaction (`_labelled`). The bus falls back to `on_feedback` one by one if this
    fails."""
    spec_of = await _specs_of((batch.model for _, batch in records), specs)
    async with uow.handling_all(records) as (tx, fresh):
        _labelled(tx, fresh, spec_of, profiles or Profiles(), now=now)


def _labelled(
    tx: Tx,
    batches: list[FeedbackBatch],
    spec_of: dict[str, ModelSpec | None],
    profiles: Profiles,
    *,
    now: Callable[[], datetime],
) -> None:
    """Label batches in turn, each model's row and label window read once and written once
    (`Loaded`, `LabelWindows`): each batch's labels are stored before the next one's, so an
    evaluation reads the same rows as when each batch is handled alone."""
    loaded = Loaded(tx.conn)
    windows = LabelWindows(tx.conn)
    for batch in batches:
        added = record_labels(tx.conn, samples, batch)
        spec = spec_of[batch.model]
        state = loaded.state(batch.model)
        if spec is None or state is None or state["reference_version"] is None or not added:
            continue
        profile = profiles.get(tx.conn, batch.model, state["reference_run_id"])
        if profile is not None and profile.label is not None:
            _add_labels(tx, windows, batch, profile, spec, state, added, now=now())
        values = _judge_performance(tx, batch, spec, state, added, now=now())
        if "open_cycle_id" not in values:
            since_retrain = (state["labels_since_retrain"] or 0) + added
            decision = decide_on_volume(
                since_retrain, _trigger_state(state), spec.monitor, now=now()
            )
            values["labels_since_retrain"] = since_retrain
            if decision is not None and _worth_recording(tx, batch.model, "volume", decision):
                values |= _record_decision(
                    tx, batch.model, "volume", decision, cause_id=None, now=now()
                )
        loaded.save(batch.model, **values)
    windows.flush()
    loaded.flush(at=now())


def _add_labels(
    tx: Tx,
    windows: LabelWindows,
    batch: FeedbackBatch,
    profile: ReferenceProfile,
    spec: ModelSpec,
    state: dict[str, Any],
    added: int,
    *,
    now: datetime,
) -> None:
    """The batch's new labels join the label window, judged (reported and logged, never a
    trigger) once it has `monitor.window` labels."""
    labels = _new_labels(tx, batch, added)
    window = add_labels(windows.get(batch.model), profile, labels, batch.at)
    if window.rows < spec.monitor.window:
        windows.put(batch.model, compact(window) if compaction_due(window) else window)
        return
    figures = label_report(profile, window, spec.monitor.drift)
    if figures is None:  # not reached: the profile has a label
        return
    last = {
        "rows": window.rows,
        "window_start": window.start,
        "window_end": window.end,
        "at": now,
        "reference_version": state["reference_version"],
        **figures.model_dump(mode="json"),
    }
    logger.info(
        "label drift" if figures.drifted else "label window judged",
        extra={"model": batch.model, "psi": figures.psi, "rows": window.rows},
    )
    windows.put(batch.model, Window(), last_drift=_jsonable(last))


def _new_labels(tx: Tx, batch: FeedbackBatch, added: int) -> list[Any]:
    """The labels `record_labels` just stored (the first per id, none stored before)."""
    first: dict[str, Any] = {}
    for item in batch.labels:
        first.setdefault(item.id, item.label)
    if added == len(first):
        return list(first.values())
    # some ids had a label already: the ones stored now carry this batch's time
    stored = tx.conn.execute(
        sa.select(samples.c.id).where(
            samples.c.model == batch.model,
            samples.c.id.in_(list(first)),
            samples.c.labelled_at == batch.at,
        )
    )
    return [first[r.id] for r in stored]


def _worth_recording(tx: Tx, model: str, trigger: str, decision: RetrainDecision) -> bool:
    """Every fired decision, and a suppressed one unless the model's last decision was the
    same trigger suppressed already (a condition that holds batch after batch is recorded
    once, not once per batch)."""
    if decision.fire:
        return True
    last = last_decision(tx.conn, model)
    return last is None or last["trigger"] != trigger or bool(last["fired"])


def _judge_performance(
    tx: Tx,
    batch: FeedbackBatch,
    spec: ModelSpec,
    state: dict[str, Any],
    added: int,
    *,
    now: datetime,
) -> dict[str, Any]:
    """Every `min_labels` new labels, the champion's live metric against the floor: below it
    opens or continues the performance episode (onset: when the judged rows' drop began, the
    change point of `onset_of_drop`), reported (PerformanceDegraded) on its first evaluation
    and every `monitor.event_every` after, and takes the retrain decision; within it ends the
    episode. Returns the model-state columns that change."""
    policy = spec.monitor.performance
    pending = (state["labels_since_eval"] or 0) + added
    if pending < policy.min_labels:
        return {"labels_since_eval": pending}
    rows = labelled_of_version(
        tx.conn,
        batch.model,
        state["reference_version"],
        limit=max(policy.min_labels, spec.monitor.window),
    )
    values: dict[str, Any] = {"labels_since_eval": 0}
    if len(rows) < policy.min_labels:
        return values
    figure = live_metric(policy.metric, [r.label for r in rows], [r.prediction for r in rows])
    values["last_performance"] = {
        "metric": policy.metric,
        "figure": figure,
        "labels": len(rows),
        "at": now.isoformat(),
        "version": state["reference_version"],
        "floor": policy.min,
    }
    values["performance_history"] = with_evaluation(
        state.get("performance_history"), values["last_performance"]
    )
    values |= _episode_window(
        tx,
        batch.model,
        "performance",
        state,
        spec,
        holds=worse_than_floor(figure, policy),
        start=_drop_onset(policy.metric, rows, now=now),
        event=lambda episode: PerformanceDegraded(
            model=batch.model,
            window_start=min(r.labelled_at for r in rows),
            window_end=max(r.labelled_at for r in rows),
            metric=policy.metric,
            figure=figure,
            threshold=policy.min,
            labels=len(rows),
            episode_start=episode.start,
            episode_windows=episode.windows,
        ),
        decide=lambda trigger: decide_on_performance(
            figure, len(rows), trigger, spec.monitor, now=now
        ),
        labels=(state["labels_since_retrain"] or 0) + added,
        now=now,
    )
    return values


def _drop_onset(metric: str, rows: list[Any], *, now: datetime) -> datetime:
    """When the judged rows' drop began (`onset_of_drop`); `now` when none has a time."""
    timed = [(r.predicted_at, r.label, r.prediction) for r in rows if r.predicted_at]
    return onset_of_drop(metric, timed) if timed else now


async def on_retrain_requested(event: RetrainRequested, *, uow: SqlUnitOfWork) -> None:
    """A cycle started (by us, the CLI or a bootstrap): remember it so none runs beside it,
    and count new labels for the volume trigger from here. One we started is remembered
    already (with the decision): its end may even have come first."""
    async with uow.handling() as tx:
        cycle_started(
            tx.conn, event.model, event.cycle_id, trigger=event.trigger, at=event.requested_at
        )
        if decided(tx.conn, event.model, event.cycle_id):
            return
        save(tx.conn, event.model, open_cycle_id=event.cycle_id, labels_since_retrain=0)


async def _each_model(
    uow: SqlUnitOfWork, specs: SpecSource, listed: Callable[[Connection], list[str]]
) -> AsyncIterator[tuple[str, ModelSpec | None]]:
    """For a timer: each model `listed` names, with its spec (None when it has none)."""
    with uow.engine.connect() as conn:
        names = listed(conn)
    for model in names:
        yield model, await specs.get(model)


async def check_schedule(*, uow: SqlUnitOfWork, specs: SpecSource, now: datetime) -> None:
    """The schedule trigger, run by a timer: every model whose `monitor.schedule` has passed
    since its last retraining (or since its reference was set)."""
    async for model, spec in _each_model(uow, specs, known_models):
        if spec is None or spec.monitor.schedule is None:
            continue
        async with uow.transaction() as tx:
            state = load(tx.conn, model)
            if state is None or state["reference_at"] is None:
                continue
            decision = decide_on_schedule(
                _trigger_state(state), spec.monitor, since=state["reference_at"], now=now
            )
            if decision is not None and _worth_recording(tx, model, "schedule", decision):
                values = _record_decision(tx, model, "schedule", decision, cause_id=None, now=now)
                if values:
                    save(tx.conn, model, **values)


async def close_due_windows(*, uow: SqlUnitOfWork, specs: SpecSource, now: datetime) -> None:
    """Time windows when traffic paused, run by a timer: a window `window_time` old (with at
    least `window_min_rows`), the champion's or a serving version's, is judged now, not when
    the next batch comes."""
    profiles = Profiles()
    async for model, spec in _each_model(uow, specs, known_models):
        if spec is None or spec.monitor.window_time is None:
            continue
        async with uow.transaction() as tx:
            state = load_state(tx.conn, model)
            if state is None:
                continue
            window = Window.model_validate(state["window"] or {})
            champion_due = window_due(window, spec.monitor, at=now)
            versions_due = [
                (row, opened)
                for row in version_windows_of(tx.conn, model)
                if window_due(
                    opened := Window.model_validate(row["window"] or {}), spec.monitor, at=now
                )
            ]
            if not champion_due and not versions_due:
                continue  # the usual tick: no profile read and parsed for nothing
            profile = profiles.get(tx.conn, model, state["reference_run_id"])
            if profile is None:
                continue
            if champion_due:
                report = _judge(tx, WindowKey(model), profile, window, spec)
                values = _on_champion_report(tx, model, report, spec, state, now=now)
                save(tx.conn, model, window=stored_window(Window()), **values)
            for row, window in versions_due:
                key = WindowKey(model, row["version"])
                own = profiles.get(tx.conn, model, row["reference_run_id"], version=key.version)
                report = _judge(tx, key, own or profile, window, spec)
                save_version_window(
                    tx.conn,
                    model,
                    row["version"],
                    window=stored_window(Window()),
                    last_drift=_version_summary(model, key, report, row, now=now),
                )


async def on_deployed(
    event: Deployed,
    *,
    uow: SqlUnitOfWork,
    client: MlflowClient,
    now: Callable[[], datetime],
    outcome: str = "Deployed",
) -> None:
    """The new champion's training profile becomes the reference; the window restarts and
    every episode ends (the new champion's are judged afresh). A deploy that replaced a
    champion starts the cooldown: the next time-gated retrain counts from the new version's
    first answer, not from when its cycle was requested. The cycle ended with `outcome`
    (a rollback that restored an earlier champion comes here too)."""
    if uow.already_handled():
        return
    raw = await asyncio.to_thread(read_json_artifact, client, event.run_id, PROFILE_ARTIFACT)
    profile = ReferenceProfile.model_validate(raw)
    async with uow.handling() as tx:
        cycle_ended(tx.conn, event.model, event.cycle_id, outcome=outcome, at=now())
        state = load(tx.conn, event.model) or {}
        values: dict[str, Any] = {
            "reference_version": event.version,
            "reference_run_id": event.run_id,
            "reference_at": now(),
            "window": stored_window(Window()),
            "episodes": None,
        }
        save_profile(tx.conn, event.model, profile.model_dump(mode="json"))
        clear_window_samples(tx.conn, event.model)
        drop_version_windows(tx.conn, event.model)  # their reference was the old champion
        save_label_window(tx.conn, event.model, window=Window().model_dump(mode="json"))
        if state.get("open_cycle_id") in (None, event.cycle_id):
            values["open_cycle_id"] = None
        if event.previous_version is not None:
            values["last_retrain_at"] = now()
        save(tx.conn, event.model, **values)
    logger.info("reference replaced", extra={"model": event.model, "version": event.version})


async def on_evaluation_passed(
    event: EvaluationPassed, *, uow: SqlUnitOfWork, client: MlflowClient
) -> None:
    """A challenger will serve beside the champion: its training profile becomes the
    reference of its own drift window, which (re)starts empty."""
    if uow.already_handled():
        return
    with uow.engine.connect() as conn:
        state = load(conn, event.model) or {}
    profile = None
    if not _superseded(event.version, state.get("reference_version")):
        profile = await asyncio.to_thread(_logged_profile, client, event.run_id)
    async with uow.handling() as tx:
        if profile is None:
            return
        clear_window_samples(tx.conn, event.model, version=event.version)
        save_version_window(
            tx.conn,
            event.model,
            event.version,
            reference_run_id=event.run_id,
            reference_version=event.version,
            profile=profile.model_dump(mode="json"),
            window=stored_window(Window()),
            last_drift=None,
        )


def _superseded(version: str, champion: str | None) -> bool:
    """Whether a verdict's version is the champion or older (MLflow numbers versions 1, 2, ...):
    a consumer created on an existing stream is handed every past verdict first."""
    if champion is None:
        return False
    try:
        return int(version) <= int(champion)
    except ValueError:
        return version == champion


def _logged_profile(client: MlflowClient, run_id: str) -> ReferenceProfile | None:
    """The run's reference profile; None when the run logged none (made without our trainer:
    its version's window then uses the champion's). An MLflow that cannot answer raises, and
    the bus tries again."""
    logged = {a.path for a in client.list_artifacts(run_id, "data")}
    if PROFILE_ARTIFACT not in logged:
        logger.info("no training profile logged", extra={"run_id": run_id})
        return None
    return ReferenceProfile.model_validate(read_json_artifact(client, run_id, PROFILE_ARTIFACT))


async def on_rolled_back(
    event: RolledBack,
    *,
    uow: SqlUnitOfWork,
    client: MlflowClient,
    now: Callable[[], datetime],
    specs: SpecSource | None = None,
) -> None:
    """The cycle is over; when the rollback changed the champion (a person rolled it back to
    an earlier version), that version's training profile becomes the reference again."""
    with uow.engine.connect() as conn:
        state = load(conn, event.model) or {}
    if (
        event.restored_version is not None
        and event.restored_run_id is not None
        and state.get("reference_version") not in (None, event.restored_version)
    ):
        restored = Deployed(
            model=event.model,
            cycle_id=event.cycle_id,
            version=event.restored_version,
            previous_version=event.version,
            run_id=event.restored_run_id,
        )
        await on_deployed(restored, uow=uow, client=client, now=now, outcome="RolledBack")
        return
    await on_cycle_ended(event, uow=uow, now=now, specs=specs)


async def on_cycle_ended(
    event: Event,
    *,
    uow: SqlUnitOfWork,
    now: Callable[[], datetime],
    specs: SpecSource | None = None,
) -> None:
    """EvaluationFailed, DataRejected, TrainingFailed, RolledBack: the cycle is over. A cycle
    an open episode started is one failed attempt of that episode (its next waits for labels,
    not the cooldown); at `monitor.stall_after` of them, AdaptationStalled, once."""
    cycle_id = getattr(event, "cycle_id", None)
    spec = await specs.get(event.model) if specs is not None else None
    policy = spec.monitor if spec is not None else MonitorSpec()
    async with uow.handling() as tx:
        if cycle_id is not None:
            cycle_ended(tx.conn, event.model, cycle_id, outcome=event.event_type(), at=now())
        state = load(tx.conn, event.model)
        if state is None:
            return
        values: dict[str, Any] = {}
        if state["open_cycle_id"] == cycle_id:
            values["open_cycle_id"] = None
        failure = (
            cycle_failed(
                Episodes.load(state["episodes"]),
                cycle_id,
                outcome=event.event_type(),
                reason=_why(event),
                at=now(),
                stall_after=policy.stall_after,
            )
            if cycle_id is not None
            else None
        )
        if failure is not None:
            values["episodes"] = failure.episodes.dump()
            if failure.stalled is not None:
                stalled = failure.stalled
                tx.emit(stalled_event(event.model, stalled, **_live_metric(state, policy)))
                logger.info(
                    "adaptation stalled",
                    extra={
                        "model": event.model,
                        "trigger": stalled.kind,
                        "attempts": stalled.failed,
                    },
                )
        if values:
            save(tx.conn, event.model, **values)


def _why(event: Event) -> str:
    """Why a cycle ended: the event's reason, or a rollback's failed check."""
    reason = str(getattr(event, "reason", "") or "")
    check = getattr(event, "check", None)
    if not reason and check is not None:
        reason = f"{check.name} {check.figure} (threshold {check.threshold})"
    return reason


def _live_metric(state: dict[str, Any], policy: MonitorSpec) -> dict[str, Any]:
    """The champion's last live metric against the floor, when one was measured."""
    last = state["last_performance"] or {}
    if last.get("version") != state["reference_version"] or last.get("figure") is None:
        return {}
    return {
        "metric": last["metric"],
        "figure": float(last["figure"]),
        "threshold": policy.performance.min,
    }


async def status(
    model: str, *, uow: SqlUnitOfWork, specs: SpecSource | None = None
) -> dict[str, Any]:
    """What `GET /v1/models/{model}` shows of the monitor (answered over request-reply)."""
    with uow.engine.connect() as conn:
        state = load(conn, model)
        decision = last_decision(conn, model)
        labels = load_label_window(conn, model) or {}
        serving = version_windows_of(conn, model)
    if state is None:
        return {"model": model, "known": False}
    episodes = Episodes.load(state["episodes"])
    retry_labels = MonitorSpec().retry_labels
    if specs is not None and any(e.failed for e in episodes.open.values()):  # a retry waits
        spec = await specs.get(model)
        retry_labels = spec.monitor.retry_labels if spec is not None else retry_labels
    window = state["window"] or {}
    answer: dict[str, Any] = _jsonable(
        {
            "model": model,
            "known": True,
            "reference_version": state["reference_version"],
            "window_rows": window.get("rows", 0),
            "rows_seen": state["rows_seen"],
            "last_drift": state["last_drift"],
            "versions": {
                row["version"]: _version_window_status(row)
                for row in serving
                if row["version"] != state["reference_version"]
            },
            "label_window_rows": (labels.get("window") or {}).get("rows", 0),
            "last_label_drift": labels.get("last_drift"),
            "last_performance": state["last_performance"],
            "performance_history": state.get("performance_history") or [],
            "open_cycle_id": state["open_cycle_id"],
            "last_retrain_at": state["last_retrain_at"],
            "episodes": {
                kind: episode_status(
                    episode,
                    retry_labels=retry_labels,
                    labels_since=state["labels_since_retrain"] or 0,
                )
                for kind, episode in episodes.open.items()
            },
            "last_decision": {
                k: decision[k] for k in ("at", "trigger", "fired", "reason", "cycle_id")
            }
            if decision
            else None,
        }
    )
    return answer


def _version_window_status(row: dict[str, Any]) -> dict[str, Any]:
    """A serving version's drift window as the status shows it."""
    return {
        "window_rows": (row["window"] or {}).get("rows", 0),
        "reference_version": row["reference_version"],
        "last_drift": row["last_drift"],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def prune_samples(
    *, uow: SqlUnitOfWork, specs: SpecSource, now: datetime, batch: int = PRUNE_BATCH
) -> int:
    """The samples retention, run by a timer: per model, answers beyond the newest
    `monitor.keep_samples` or older than `monitor.keep_samples_for` go, with labels whose
    answer never came (or went) from before the same time; `batch` rows a transaction.
    Returns how many rows were deleted."""
    deleted = 0
    async for model, spec in _each_model(uow, specs, sample_models):
        keep = spec.monitor if spec else MonitorSpec()
        with uow.engine.connect() as conn:
            cutoff = samples_cutoff(
                conn, model, keep=keep.keep_samples, oldest=now - keep.keep_samples_for
            )
        while True:
            async with uow.transaction() as tx:
                done = delete_samples_before(tx.conn, model, cutoff, limit=batch)
            deleted += done
            if done < batch:
                break
            await asyncio.sleep(0)  # let the consumers in between batches
    async with uow.transaction() as tx:
        unpaired = drop_unpaired(tx, now=now)
    if unpaired:
        logger.info("shadow answers never paired with the champion's", extra={"rows": unpaired})
    if deleted:
        logger.debug("samples pruned", extra={"rows": deleted})
    return deleted
