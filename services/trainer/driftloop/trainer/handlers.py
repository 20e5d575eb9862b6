"""The trainer's handlers: keep labelled samples, and train when a cycle asks for it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa

from driftloop.shared.bus import RetryLaterError
from driftloop.shared.db import SqlUnitOfWork, Tx
from driftloop.shared.events import (
    DataRejected,
    FeedbackBatch,
    ModelTrained,
    PredictionBatch,
    RetrainRequested,
    TrainingFailed,
)
from driftloop.shared.samples import recent_labelled, record_labels, record_predictions
from driftloop.shared.service import SpecSource
from driftloop.trainer.adapters.registry import Champion, TrainerRegistry, records_frame
from driftloop.trainer.adapters.store import runs, samples
from driftloop.trainer.domain.dataset import assemble, validate
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


async def on_retrain_requested(
    event: RetrainRequested,
    *,
    uow: SqlUnitOfWork,
    specs: SpecSource,
    registry: TrainerRegistry,
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
        after = (
            datetime.fromisoformat(champion.labelled_until)
            if (champion and champion.labelled_until)
            else None
        )
        with uow.engine.connect() as conn:
            rows = recent_labelled(
                conn, samples, event.model, after=after, limit=spec.trainer.max_rows
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

    ts = assemble(recent, reference, spec)
    evidence: ChampionEvidence | None = None
    if champion is not None and spec.task == "classification":
        evidence = await asyncio.to_thread(
            registry.champion_evidence, champion, ts.frame.iloc[: ts.recent_rows], ts.features
        )
    checks = validate(ts, spec, reference=reference, champion=evidence)
    failed = [c for c in checks if not c.passed]
    if failed:
        logger.info(
            "data rejected",
            extra={
                "model": event.model,
                "cycle_id": event.cycle_id,
                "failed": [c.name for c in failed],
            },
        )
        async with uow.handling(event) as tx:
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
        return

    started = time.perf_counter()
    try:
        fitted = await asyncio.to_thread(
            fit, ts.frame, ts.features, spec, recent_rows=ts.recent_rows
        )
    except RecipeError as exc:
        async with uow.handling(event) as tx:
            _fail(tx, event, str(exc), estimator=spec.recipe.estimator)
        return
    seconds = time.perf_counter() - started
    version, run_id = await asyncio.to_thread(
        registry.log,
        event,
        spec,
        ts,
        fitted,
        parent=parent,
        labelled_until=labelled_until,
        train_seconds=seconds,
    )
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
