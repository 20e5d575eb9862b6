"""The trainer's handlers: keep labelled samples, and train when a cycle asks for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

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
from driftloop.shared.samples import recent_labelled, record_labels, record_predictions
from driftloop.shared.service import SpecSource
from driftloop.shared.spec import format_duration
from driftloop.trainer.adapters.registry import (
    Champion,
    Lineage,
    TrainerRegistry,
    records_frame,
    stored_form,
)
from driftloop.trainer.adapters.store import runs, samples
from driftloop.trainer.adapters.worker import TrainingWorkers, WorkerError
from driftloop.trainer.domain.dataset import assemble, recent_since, validate
from driftloop.trainer.domain.training import RecipeError, fit
from driftloop.trainer.domain.validation import ChampionEvidence

logger = logging.getLogger(__name__)
LABEL_POLL_SECONDS = 10.0


async def on_predictions(batch: PredictionBatch, *, uow: SqlUnitOfWork) -> None:
    async with uow.handling() as tx:
        record_predictions(tx.conn, samples, batch)


async def on_feedback(batch: FeedbackBatch, *, uow: SqlUnitOfWork) -> None:
    async with uow.handling() as tx:
        record_labels(tx.conn, samples, batch)


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
) -> None:
    if uow.already_handled():
        return
    spec = await specs.get(event.model)
    if spec is None:
        async with uow.handling(event) as tx:
            _fail(tx, event, f"no spec applied for model {event.model!r} (driftloop apply FILE)")
        return

    done = await asyncio.to_thread(registry.existing, event.model, event.cycle_id)
    if done is not None:  # registered before a crash: announce it, do not train twice
        version, run_id = done
        run = await asyncio.to_thread(registry.client.get_run, run_id)
        async with uow.handling(event) as tx:
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
    if event.trigger == "bootstrap":
        if not event.data_uri:
            async with uow.handling(event) as tx:
                _fail(tx, event, "bootstrap request without data_uri")
            return
        try:
            recent = await asyncio.to_thread(registry.bootstrap_data, event.data_uri)
        except Exception as exc:
            async with uow.handling(event) as tx:
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
        with uow.engine.connect() as conn:
            rows = recent_labelled(
                conn, samples, event.model, after=since, limit=spec.trainer.max_rows
            )
        if len(rows) < spec.trainer.min_rows:
            waited = now() - event.requested_at
            if waited > spec.trainer.label_wait:
                async with uow.handling(event) as tx:
                    _fail(
                        tx,
                        event,
                        f"only {len(rows)} new labelled rows after waiting "
                        f"{waited}; min_rows is {spec.trainer.min_rows}",
                        labelled_rows=len(rows),
                        min_rows=spec.trainer.min_rows,
                    )
                return
            raise RetryLaterError(
                f"waiting for labels: {len(rows)}/{spec.trainer.min_rows} new labelled rows",
                delay=LABEL_POLL_SECONDS,
            )
        recent = records_frame(rows, spec.target)
        labelled_until = max(r.labelled_at for r in rows).isoformat()
        reference = champion.dataset if champion else None

    assembled = assemble(recent, reference, spec)
    try:
        ts = stored_form(assembled)
    except ValueError as exc:  # a column parquet cannot hold: the set could not be versioned
        check = CheckResult(name="storable", figure=0, threshold=1, passed=False, detail=str(exc))
        async with uow.handling(event) as tx:
            _reject(tx, event, [check])
        return
    evidence: ChampionEvidence | None = None
    if champion is not None and spec.task == "classification":
        evidence = await asyncio.to_thread(
            registry.champion_evidence, champion, ts.frame.iloc[: ts.recent_rows], ts.features
        )
    checks = validate(ts, spec, reference=reference, champion=evidence)
    if any(not c.passed for c in checks):
        async with uow.handling(event) as tx:
            _reject(tx, event, checks)
        return

    limit = spec.trainer.time_limit
    try:
        trained = await workers.run(
            partial(fit, recent_rows=ts.recent_rows),
            ts.frame,
            ts.features,
            spec,
            limit=limit.total_seconds(),
            limit_name="trainer.time_limit",
        )
    except WorkerError as exc:
        reason = exc.message if exc.kind == RecipeError.__name__ else exc.reason
        async with uow.handling(event) as tx:
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
    window = "file" if event.trigger == "bootstrap" else "time" if spec.trainer.window else "rows"
    lineage = Lineage(
        parent=parent,
        labelled_until=labelled_until,
        train_seconds=trained.seconds,
        window=window,
        recent_since=since.isoformat() if since else None,
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
    async with uow.handling(event) as tx:
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
