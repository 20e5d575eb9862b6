"""The deployer's handler: release each version that passed its evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from driftloop.deployer.adapters.routes import RouteWriter
from driftloop.deployer.adapters.store import audit, last_champion
from driftloop.deployer.domain.rollout import plan
from driftloop.shared.db import SqlUnitOfWork
from driftloop.shared.events import EvaluationPassed
from driftloop.shared.service import SpecSource

logger = logging.getLogger(__name__)


async def on_evaluation_passed(
    event: EvaluationPassed,
    *,
    uow: SqlUnitOfWork,
    specs: SpecSource,
    routes: RouteWriter,
    now: Callable[[], datetime],
) -> None:
    if uow.already_handled():
        return
    spec = await specs.get(event.model)
    if spec is None:
        raise RuntimeError(f"no spec for model {event.model!r}")
    current = await routes.current(event.model)
    with uow.engine.connect() as conn:
        previous = last_champion(conn, event.model, before_cycle=event.cycle_id)
    if (
        previous is None
        and current
        and current.champion
        and (current.champion.version != event.version)
    ):
        previous = current.champion
    transition = plan(event, current, previous, spec, now=now())
    await routes.apply(transition.routes)
    logger.info(
        "promoted",
        extra={
            "model": event.model,
            "cycle_id": event.cycle_id,
            "version": event.version,
            "previous": previous.version if previous else None,
        },
    )
    async with uow.handling(event) as tx:
        audit(
            tx.conn,
            model=event.model,
            cycle_id=event.cycle_id,
            version=event.version,
            run_id=event.run_id,
            from_stage=None,
            to_stage=transition.rollout.stage.value,
            previous_version=previous.version if previous else None,
            actor="deployer",
            reason=event.reason,
            at=now(),
        )
        for out in transition.events:
            tx.emit(out)
