"""The trainer's handlers: keep labelled samples, and train when a cycle asks for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

import pandas as pd
import sqlalchemy as sa

from driftloop.shared.bus import RetryLaterError
from driftloop.shared.db import SqlUnitOfWork, Tx
from driftloop.shared.events import (
    CheckResult,
    DataRejected,
    FeedbackBatch,
    ModelTrained,
    PredictionBatch,
    RetrainRequested,
    TrainingFailed,
)
from driftloop.shared.samples import (
    count_labelled,
    recent_labelled,
    record_all_labels,
    record_all_predictions,
    record_labels,
    record_predictions,
)
from driftloop.shared.service import SpecSource
from driftloop.shared.spec import ModelSpec, format_duration
from driftloop.trainer.adapters.progress import WaitBoard
from driftloop.trainer.adapters.registry import (
    Champion,
    Lineage,
    TrainerRegistry,
    records_frame,
    stored_form,
)
from driftloop.trainer.adapters.store import runs, samples, served_features
from driftloop.trainer.adapters.worker import TrainingWorkers, WorkerError
from driftloop.trainer.domain.dataset import assemble, recent_since, validate
from driftloop.trainer.domain.regime import LabelWait, rows_needed
from driftloop.trainer.domain.training import RecipeError, fit

logger = logging.getLogger(__name__)
LABEL_POLL_SECONDS = 2.0  # a count query; every second waited is traffic the old model serves


async def on_predictions(batch: PredictionBatch, *, uow: SqlUnitOfWork) -> None:
    async with uow.handling() as tx:
        record_predictions(tx.conn, samples, batch)


async def on_feedback(batch: FeedbackBatch, *, uow: SqlUnitOfWork) -> None:
    async with uow.handling() as tx:
        record_labels(tx.conn, samples, batch)


async def on_all_predictions(
    records: list[tuple[str, PredictionBatch]], *, uow: SqlUnitOfWork
) -> None:
    """A fetch of prediction records at once: what `on_predictions` does for each, in one
    statement (the bus falls back to `on_predictions` one by one if this fails)."""
    async with uow.handling_all(records) as (tx, fresh):
        record_all_predictions(tx.conn, samples, fresh)


async def on_all_feedback(records: list[tuple[str, FeedbackBatch]], *, uow: SqlUnitOfWork) -> None:
    """A fetch of label records at once: what `on_feedback` does for each."""
    async with uow.handling_all(records) as (tx, fresh):
        record_all_labels(tx.conn, samples, fresh)


def _count_labels(
    uow: SqlUnitOfWork,
    event: RetrainRequested,
    spec: ModelSpec,
    since: datetime | None,
    *,
    now: datetime,
) -> LabelWait:
    """How many labelled rows the retraining has of those it needs: labelled after `since`
    and, on a cycle with an onset, served at or after it."""
    with uow.engine.connect() as conn:
        have = count_labelled(conn, samples, event.model, after=since, predicted_from=event.onset)
    return LabelWait(
        have=have,
        needed=rows_needed(spec.trainer, onset=event.onset),
        onset=event.onset,
        waited=now - event.requested_at,
        limit=spec.trainer.label_wait,
    )


def _labelled_rows(
    uow: SqlUnitOfWork, event: RetrainRequested, spec: ModelSpec, since: datetime | None
) -> tuple[pd.DataFrame, pd.DataFrame | None, str | None]:
    """The recent rows (on a cycle with an onset: served after it), the older labelled rows
    (served before the onset; None without one) and the newest label time among them."""
    limit = spec.trainer.max_rows
    with uow.engine.connect() as conn:
        rows = recent_labelled(
            conn, samples, event.model, after=since, limit=limit, predicted_from=event.onset
        )
        before = (
            recent_labelled(
                conn, samples, event.model, after=since, limit=limit, predicted_before=event.onset
            )
            if event.onset is not None
            else []
        )
    times = [r.labelled_at for r in (*rows, *before)]
    older = records_frame(before, spec.target) if event.onset is not None else None
    return (
        records_frame(rows, spec.target),
        older,
        max(times).isoformat() if times else None,
    )


def _fail(tx: Tx, event: RetrainRequested, reason: str, **report: object) -> None:
    logger.info(
        "training failed",
        extra={"model": event.model, "cycle_id": event.cycle_id, "reason": reason},
    )
    tx.emit(
        TrainingFailed(
            model=event.model, cycle_id=event.cycle_id, reason=reason, report=dict(report)
        )
    )


def _reject(tx: Tx, event: RetrainRequested, checks: list[CheckResult]) -> None:
    failed = [c for c in checks if not c.passed]
    logger.info(
        "data rejected",
        extra={
            "model": event.model,
            "cycle_id": event.cycle_id,
            "failed": [c.name for c in failed],
        },
    )
    tx.emit(
        DataRejected(
            model=event.model,
            cycle_id=event.cycle_id,
            reason="; ".join(
                f"{c.name}: {c.figure} vs {c.threshold} {c.detail}".strip() for c in failed
            ),
            report=checks,
        )
    )


async def on_retrain_requested(
    event: RetrainRequested,
    *,
    uow: SqlUnitOfWork,
    specs: SpecSource,
    registry: TrainerRegistry,
    workers: TrainingWorkers,
    now: Callable[[], datetime],
    waits: WaitBoard | None = None,
) -> None:
    if uow.already_handled():
        return
    spec = await specs.get(event.model)
    if spec is None:
        async with uow.handling() as tx:
            _fail(tx, event, f"no spec applied for model {event.model!r} (driftloop apply FILE)")
        return
    logger.info(  # the last bus read before the commit: what follows is MLflow, data, fitting
        "training started",
        extra={"model": event.model, "cycle_id": event.cycle_id, "trigger": event.trigger},
    )

    done = await asyncio.to_thread(registry.existing, event.model, event.cycle_id)
    if done is not None:  # registered before a crash: announce it, do not train twice
        version, run_id = done
        run = await asyncio.to_thread(registry.client.get_run, run_id)
        async with uow.handling() as tx:
            tx.emit(
                ModelTrained(
                    model=event.model,
                    cycle_id=event.cycle_id,
                    version=version,
                    run_id=run_id,
                    dataset_version=run.data.tags.get("driftloop.dataset_version", ""),
                    metrics=dict(run.data.metrics),
                    trigger=event.trigger,
                )
            )
        return

    parent: str | None = None
    labelled_until: str | None = None
    since: datetime | None = None
    champion: Champion | None = None
    older: pd.DataFrame | None = None
    if event.trigger == "bootstrap":
        if not event.data_uri:
            async with uow.handling() as tx:
                _fail(tx, event, "bootstrap request without data_uri")
            return
        try:
            recent = await asyncio.to_thread(registry.bootstrap_data, event.data_uri)
        except Exception as exc:
            async with uow.handling() as tx:
                _fail(tx, event, f"cannot read the training file: {exc}")
            return
        reference = None
    else:
        champion = await asyncio.to_thread(registry.champion, event.model)
        parent = champion.ref.version if champion else None
        cut = (
            datetime.fromisoformat(champion.labelled_until)
            if (champion and champion.labelled_until)
            else None
        )
        since = recent_since(cut, spec.trainer.window, now=now())
        wait = _count_labels(uow, event, spec, since, now=now())
        if wait.outcome == "wait":
            if waits is not None:
                waits.waiting(event.model, event.cycle_id, wait, at=now())
            raise RetryLaterError(wait.progress(), delay=LABEL_POLL_SECONDS)
        if waits is not None:
            waits.done(event.cycle_id)
        if wait.outcome == "fail":
            async with uow.handling() as tx:
                _fail(tx, event, wait.failure(), **wait.report(), min_rows=spec.trainer.min_rows)
            return
        recent, older, labelled_until = await asyncio.to_thread(
            _labelled_rows, uow, event, spec, since
        )
        reference = champion.dataset if champion else None

    # a first version no champion is compared with is refitted on its holdout too
    refit = event.trigger == "bootstrap" and (
        await asyncio.to_thread(registry.champion, event.model) is None
    )
    # the first version learns from the whole file it is given; max_rows bounds retraining
    assembled = assemble(
        recent,
        reference,
        spec,
        older=older,
        max_rows=len(recent) if event.trigger == "bootstrap" else None,
        deduplicate=False if event.trigger == "bootstrap" else None,
    )
    try:
        ts = stored_form(assembled)
    except ValueError as exc:  # a column parquet cannot hold: the set could not be versioned
        check = CheckResult(name="storable", figure=0, threshold=1, passed=False, detail=str(exc))
        async with uow.handling() as tx:
            _reject(tx, event, [check])
        return
    # the gate judges the training rows against what was served over their period, not the old
    # training range; its label check fits a quick model: both off the event loop
    served = None
    if reference is not None:
        served = await asyncio.to_thread(
            served_features, uow.engine, event.model, onset=event.onset, labelled_after=since
        )
    checks = await asyncio.to_thread(validate, ts, spec, reference=reference, served=served)
    if any(not c.passed for c in checks):
        async with uow.handling() as tx:
            _reject(tx, event, checks)
        return

    limit = spec.trainer.time_limit
    try:
        trained = await workers.run(
            partial(fit, recent_rows=ts.recent_rows, select=event.onset is not None, refit=refit),
            ts.frame,
            ts.features,
            spec,
            limit=limit.total_seconds(),
            limit_name="trainer.time_limit",
        )
    except WorkerError as exc:
        reason = exc.message if exc.kind == RecipeError.__name__ else exc.reason
        async with uow.handling() as tx:
            _fail(
                tx,
                event,
                reason,
                estimator=spec.recipe.estimator,
                failure=exc.kind,
                time_limit=format_duration(limit),
                dataset_version=ts.version,
            )
        return
    fitted = trained.value
    if fitted.selection is not None:
        logger.info(
            "training set chosen",
            extra={
                "model": event.model,
                "cycle_id": event.cycle_id,
                "candidate": fitted.selection.chosen,
                "scores": {c.name: c.score for c in fitted.selection.scores},
            },
        )
    window = "file" if event.trigger == "bootstrap" else "time" if spec.trainer.window else "rows"
    lineage = Lineage(
        parent=parent,
        labelled_until=labelled_until,
        train_seconds=trained.seconds,
        window=window,
        recent_since=since.isoformat() if since else None,
        onset=event.onset.isoformat() if event.onset else None,
    )
    version, run_id = await asyncio.to_thread(registry.log, event, spec, ts, fitted, lineage)
    logger.info(
        "model trained",
        extra={
            "model": event.model,
            "cycle_id": event.cycle_id,
            "version": version,
            "metrics": fitted.metrics,
        },
    )
    async with uow.handling() as tx:
        tx.conn.execute(
            sa.insert(runs).values(
                cycle_id=event.cycle_id,
                model=event.model,
                version=version,
                run_id=run_id,
                dataset_version=ts.version,
                recent_rows=ts.recent_rows,
                reference_rows=ts.reference_rows,
                trained_at=now(),
            )
        )
        tx.emit(
            ModelTrained(
                model=event.model,
                cycle_id=event.cycle_id,
                version=version,
                run_id=run_id,
                dataset_version=ts.version,
                metrics=fitted.metrics,
                trigger=event.trigger,
            )
        )
