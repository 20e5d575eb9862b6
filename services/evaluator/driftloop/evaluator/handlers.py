"""The evaluator's handler: judge each trained version against the champion."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from mlflow import MlflowClient

from driftloop.evaluator.adapters.registry import record_verdict, score_pair
from driftloop.evaluator.adapters.store import verdicts
from driftloop.evaluator.domain.verdict import judge, p95_ms
from driftloop.shared.db import SqlUnitOfWork
from driftloop.shared.events import EvaluationFailed, EvaluationPassed, ModelTrained
from driftloop.shared.service import SpecSource

logger = logging.getLogger(__name__)


async def on_model_trained(
    event: ModelTrained,
    *,
    uow: SqlUnitOfWork,
    specs: SpecSource,
    client: MlflowClient,
    now: Callable[[], datetime],
) -> None:
    if uow.already_handled():
        return
    spec = await specs.get(event.model)
    if spec is None:
        raise RuntimeError(f"no spec for model {event.model!r}")
    scored = await asyncio.to_thread(
        score_pair,
        client,
        event.model,
        event.version,
        event.run_id,
        task=spec.task,
        target=spec.target,
    )
    verdict = judge(
        spec,
        challenger=scored.challenger,
        champion=scored.champion,
        latency_p95_ms=p95_ms(scored.latency_seconds),
    )
    logger.info(
        "verdict",
        extra={
            "model": event.model,
            "cycle_id": event.cycle_id,
            "version": event.version,
            "passed": verdict.passed,
            "reason": verdict.reason,
        },
    )
    cls = EvaluationPassed if verdict.passed else EvaluationFailed
    out = cls(
        model=event.model,
        cycle_id=event.cycle_id,
        version=event.version,
        run_id=event.run_id,
        champion_version=scored.champion_version,
        metric=spec.evaluator.metric,
        challenger_score=verdict.challenger_score,
        champion_score=verdict.champion_score,
        checks=verdict.checks,
        reason=verdict.reason,
    )
    report = out.model_dump(mode="json") | {
        "holdout_rows": scored.holdout_rows,
        "challenger_metrics": scored.challenger,
        "champion_metrics": scored.champion,
    }
    await asyncio.to_thread(record_verdict, client, event.run_id, verdict.passed, report)
    async with uow.handling(event) as tx:
        tx.conn.execute(
            sa.insert(verdicts).values(
                cycle_id=event.cycle_id,
                model=event.model,
                version=event.version,
                champion_version=scored.champion_version,
                passed=verdict.passed,
                report=report,
                judged_at=now(),
            )
        )
        tx.emit(out)
