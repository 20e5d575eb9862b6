"""The evaluator's handler: judge each trained version against the champion."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from mlflow import MlflowClient

from driftloop.evaluator.adapters.registry import (
    load_evidence,
    record_verdict,
    release_challenger,
)
from driftloop.evaluator.adapters.store import verdicts
from driftloop.evaluator.domain.verdict import judge
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
    loaded = await asyncio.to_thread(load_evidence, client, spec, event.version, event.run_id)
    # Seeded per spec: a redelivered event is judged to the same figures.
    rng = np.random.default_rng(spec.evaluator.seed)
    # The trigger and the champion's figures pick the rule: non-inferiority when it is shown
    # degraded (domain/degradation.py).
    verdict = await asyncio.to_thread(judge, spec, loaded.evidence, trigger=event.trigger, rng=rng)
    logger.info(
        "verdict",
        extra={
            "model": event.model,
            "cycle_id": event.cycle_id,
            "version": event.version,
            "champion_version": loaded.champion_version,
            "trigger": event.trigger,
            "rule": (verdict.report.get("rule") or {}).get("name"),
            "passed": verdict.passed,
            "reason": verdict.reason,
        },
    )
    degraded = {"champion_degraded": verdict.champion_degraded} if verdict.passed else {}
    cls = EvaluationPassed if verdict.passed else EvaluationFailed
    out = cls(
        **degraded,
        model=event.model,
        cycle_id=event.cycle_id,
        version=event.version,
        run_id=event.run_id,
        champion_version=loaded.champion_version,
        metric=spec.evaluator.metric,
        challenger_score=verdict.challenger_score,
        champion_score=verdict.champion_score,
        checks=verdict.checks,
        reason=verdict.reason,
    )
    report = out.model_dump(mode="json") | {"evaluation": verdict.report}
    await asyncio.to_thread(record_verdict, client, event.run_id, verdict, report)
    if not verdict.passed:  # the cycle ends here (idempotent: before the commit, as above)
        await asyncio.to_thread(release_challenger, client, event.model, event.version)
    async with uow.handling() as tx:
        tx.conn.execute(
            sa.insert(verdicts).values(
                cycle_id=event.cycle_id,
                model=event.model,
                version=event.version,
                champion_version=loaded.champion_version,
                passed=verdict.passed,
                report=report,
                judged_at=now(),
            )
        )
        tx.emit(out)
