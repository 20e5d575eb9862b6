"""The deployer's handlers: start a release when its evaluation passed, look at every running
rollout on a timer (the analysis), and carry out a person's commands.

Every transition is applied in one order: the routes (and the MLflow alias) first, both
idempotent and derived from the rollout's state alone, then the new state, its audit rows
and its events in one transaction. A crash between the two repeats the same decision on the
next look (or the redelivery), so nothing is half-applied; the revision of the row makes a
concurrent second decision fail instead of applying twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from driftloop.deployer.adapters import store
from driftloop.deployer.adapters.observer import MonitorStats
from driftloop.deployer.adapters.routes import RouteWriter
from driftloop.deployer.domain import progress
from driftloop.deployer.domain import rollout as machine
from driftloop.deployer.domain.rollout import Rollout, RolloutError, Transition
from driftloop.shared.auth import TokenSet
from driftloop.shared.db import SqlUnitOfWork, Tx
from driftloop.shared.events import EvaluationPassed
from driftloop.shared.routes import Served
from driftloop.shared.service import SpecSource
from driftloop.shared.telemetry import extract_context, inject_headers, tracer

logger = logging.getLogger(__name__)
_tracer = tracer(__name__)

Move = tuple[Transition, int | None]  # a transition and the revision it expects (None: new)


@contextmanager
def _traced(transition: Transition) -> Iterator[Rollout]:
    """Inside its cycle's trace (a cycle is one trace, whichever timer, message or command
    moves it): the rollout to store, carrying its trace."""
    rollout = transition.rollout
    if not transition.audit:
        yield rollout
        return
    parent = extract_context(rollout.trace) if rollout.trace else None
    with _tracer.start_as_current_span(
        f"rollout {transition.audit[-1].to_stage}",
        context=parent,
        attributes={
            "driftloop.model": rollout.model,
            "driftloop.cycle_id": rollout.cycle_id,
            "driftloop.version": rollout.version,
        },
    ):
        if not rollout.trace:  # a cycle started by a command: this span is its root
            rollout = replace(rollout, trace=inject_headers())
        yield rollout


def _log_moved(transition: Transition) -> None:
    rollout = transition.rollout
    if transition.audit:
        logger.info(
            "rollout moved",
            extra={
                "model": rollout.model,
                "cycle_id": rollout.cycle_id,
                "version": rollout.version,
                "to": [e.to_stage for e in transition.audit],
                "reason": rollout.reason,
            },
        )


class Deployer:
    """The deployer's I/O around the pure state machine (one per process)."""

    def __init__(
        self,
        *,
        uow: SqlUnitOfWork,
        specs: SpecSource,
        routes: RouteWriter,
        stats: MonitorStats,
        now: Callable[[], datetime],
        versions: Callable[[str, str], Served | None] | None = None,
        tokens: TokenSet | None = None,
    ) -> None:
        self.uow = uow
        self.specs = specs
        self.routes = routes
        self.stats = stats
        self.now = now
        self.versions = versions  # (model, version) -> the registered version, or None
        self.tokens = tokens or TokenSet()
        self.lock = asyncio.Lock()  # one transition at a time in this process

    async def apply(self, transition: Transition, *, expected: int | None) -> None:
        """Carry out a transition of a timer or a command, in its own transaction."""
        await self._apply([(transition, expected)], self.uow.transaction)

    async def _apply(
        self, moves: list[Move], opening: Callable[[], AbstractAsyncContextManager[Tx]]
    ) -> None:
        """Carry out transitions of one model together: the routes the last one that moves them
        asks for, then every new state, its audit rows and its events in one transaction
        (`opening`: a message's `handling()`, else `transaction()`)."""
        moving = [t.rollout for t, _ in moves if t.moves_routes]
        if moving:
            current = await self.routes.current(moving[-1].model)
            await self.routes.apply(machine.routes_for(moving[-1], current))
        for ended in (r for r in moving if r.stage in machine.TERMINAL):
            await self.routes.release_challenger(ended.model, ended.version)
        async with opening() as tx:
            for transition, expected in moves:
                with _traced(transition) as rollout:
                    store.save(tx.conn, rollout, expected_revision=expected)
                    for entry in transition.audit:
                        store.audit(tx.conn, rollout, entry, at=rollout.updated_at)
                    for event in transition.events:
                        tx.emit(event)
        for transition, _ in moves:
            _log_moved(transition)

    # The bus ------------------------------------------------------------------------------

    async def on_evaluation_passed(self, event: EvaluationPassed) -> None:
        """Start the release; a running rollout of another cycle is superseded (rolled back
        with that reason) first: the newer version was trained on newer data."""
        if self.uow.already_handled():
            return
        spec = await self.specs.get(event.model)
        if spec is None:
            raise RuntimeError(f"no spec for model {event.model!r}")
        async with self.lock:
            with self.uow.engine.connect() as conn:
                if store.rollout_of(conn, event.cycle_id) is not None:
                    return  # started already (a redelivery after the commit)
                active = store.running(conn, event.model)
                previous = store.last_champion(conn, event.model, before_cycle=event.cycle_id)
            # the old rollouts end and the new one starts in the message's one transaction
            moves: list[Move] = [
                (
                    machine.roll_back(
                        old,
                        now=self.now(),
                        actor="deployer",
                        reason=f"superseded by version {event.version} (cycle {event.cycle_id})",
                    ),
                    old.revision,
                )
                for old in active
            ]
            if previous is None:
                current = await self.routes.current(event.model)
                if current and current.champion and current.champion.version != event.version:
                    previous = current.champion
            started = machine.start(event, previous, spec, now=self.now(), trace=inject_headers())
            await self._apply([*moves, (started, None)], self.uow.handling)

    # The timer ------------------------------------------------------------------------------

    async def look(self) -> None:
        """Analyse every running rollout once."""
        with self.uow.engine.connect() as conn:
            rollouts = store.running(conn)
        for rollout in rollouts:
            try:
                await self._look_at(rollout)
            except store.StaleRolloutError:
                logger.info("rollout moved meanwhile", extra={"cycle_id": rollout.cycle_id})
            except Exception:
                logger.exception(
                    "cannot analyse the rollout",
                    extra={"model": rollout.model, "cycle_id": rollout.cycle_id},
                )

    async def _look_at(self, rollout: Rollout) -> None:
        spec = await self.specs.get(rollout.model)
        if spec is None or rollout.paused:
            return
        unanswered = None
        try:
            seen = await self.stats.observe(rollout)
        except Exception as exc:  # the monitor away, slow or failing: a look without figures
            seen, unanswered = None, str(exc) or type(exc).__name__
            logger.warning(
                "the monitor did not answer",
                extra={"model": rollout.model, "cycle_id": rollout.cycle_id, "error": unanswered},
            )
        async with self.lock:
            with self.uow.engine.connect() as conn:
                fresh = store.rollout_of(conn, rollout.cycle_id)
            if fresh is None or fresh.revision != rollout.revision:
                return  # moved while we asked the monitor: look again next time
            transition = progress.look(fresh, seen, spec, now=self.now(), unanswered=unanswered)
            if transition is not None:
                await self.apply(transition, expected=fresh.revision)

    async def run_timer(self, every: float) -> None:
        """Look at the running rollouts every `every` seconds, whatever one look met (a
        database or bus error must not stop every rollout's analysis for good)."""
        while True:
            try:
                await self.look()
            except Exception:
                logger.exception("cannot look at the running rollouts; trying again")
            await asyncio.sleep(every)

    # A person's commands ------------------------------------------------------------------------

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """approve / reject / rollback / promote / pause / resume, from `driftloop` commands.
        The answer is `{"ok": true, "rollout": {...}}` or `{"ok": false, "error": why}`."""
        if not self.tokens.accepts(request.get("token")):
            return {"ok": False, "error": self.tokens.refusal(request.get("token"))}
        action = str(request.get("action", ""))
        model = str(request.get("model", ""))
        version = request.get("version")
        actor = str(request.get("actor") or "someone")
        reason = str(request.get("reason") or "")
        try:
            spec = await self.specs.get(model)
            if spec is None:
                raise RolloutError(f"unknown model {model!r} (no spec applied)")
            async with self.lock:
                rollout = await self._command(
                    action, model, version, request.get("to"), actor, reason, spec
                )
        except (RolloutError, store.StaleRolloutError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "rollout": rollout.summary()}

    async def _command(
        self,
        action: str,
        model: str,
        version: Any,
        to: Any,
        actor: str,
        reason: str,
        spec: Any,
    ) -> Rollout:
        now = self.now()
        with self.uow.engine.connect() as conn:
            active = next(iter(store.running(conn, model)), None)
        if action in ("approve", "reject", "pause", "resume"):
            if active is None:
                raise RolloutError(f"no rollout of {model} is running")
            if version is not None and str(version) != active.version and action != "pause":
                raise RolloutError(
                    f"the running rollout of {model} is version {active.version}, not {version}"
                )
            if action == "approve":
                transition = machine.approve(active, spec, now=now, actor=actor)
            elif action == "reject":
                transition = machine.reject(active, now=now, actor=actor, reason=reason)
            else:
                transition = machine.pause(active, now=now, actor=actor, paused=action == "pause")
            await self.apply(transition, expected=active.revision)
            return transition.rollout
        if action == "rollback":
            return await self._rollback(model, active, to, actor, reason, now=now)
        if action == "promote":
            return await self._promote(model, active, version, actor, reason, now=now)
        raise RolloutError(f"unknown action {action!r}")

    async def _rollback(
        self, model: str, active: Rollout | None, to: Any, actor: str, reason: str, *, now: datetime
    ) -> Rollout:
        if active is not None:
            if to is not None and active.previous and str(to) != active.previous.version:
                raise RolloutError(
                    f"a rollout of version {active.version} is running over champion "
                    f"{active.previous.version}: roll it back first, then roll back to {to}"
                )
            transition = machine.roll_back(
                active, now=now, actor=actor, reason=reason or f"rolled back by {actor}"
            )
            await self.apply(transition, expected=active.revision)
            return transition.rollout
        current = await self.routes.current(model)
        if current is None or current.champion is None:
            raise RolloutError(f"{model} has no champion to roll back")
        target = await self._target(model, to, current.champion)
        transition = machine.restore(
            current.champion,
            target,
            model=model,
            cycle_id=f"rollback-{uuid.uuid4().hex[:12]}",
            now=now,
            actor=actor,
            reason=reason or f"rolled back by {actor} to version {target.version}",
        )
        await self.apply(transition, expected=None)
        return transition.rollout

    async def _target(self, model: str, to: Any, champion: Served) -> Served:
        if to is None:
            with self.uow.engine.connect() as conn:
                before = store.champion_before(conn, model, champion.version)
            if before is None:
                raise RolloutError(
                    f"{model} has no earlier champion than version {champion.version}; "
                    "name one with --to"
                )
            return before
        found = await self._registered(model, str(to))
        if found.version == champion.version:
            raise RolloutError(f"version {to} is already the champion of {model}")
        return found

    async def _registered(self, model: str, version: str) -> Served:
        found = await asyncio.to_thread(self.versions, model, version) if self.versions else None
        if found is None:
            raise RolloutError(f"{model} has no registered version {version}")
        return found

    async def _promote(
        self,
        model: str,
        active: Rollout | None,
        version: Any,
        actor: str,
        reason: str,
        *,
        now: datetime,
    ) -> Rollout:
        if version is None:
            raise RolloutError("promote needs a VERSION")
        why = reason or f"promoted by {actor}"
        if active is not None:
            if active.version != str(version):
                raise RolloutError(
                    f"a rollout of version {active.version} is running; roll it back before "
                    f"promoting version {version}"
                )
            transition = machine.promote(active, now=now, actor=actor, reason=why)
            await self.apply(transition, expected=active.revision)
            return transition.rollout
        current = await self.routes.current(model)
        champion = current.champion if current else None
        target = await self._registered(model, str(version))
        if champion is not None and champion.version == target.version:
            raise RolloutError(f"version {version} is already the champion of {model}")
        transition = machine.release(
            champion,
            target,
            model=model,
            cycle_id=f"promote-{uuid.uuid4().hex[:12]}",
            now=now,
            actor=actor,
            reason=why,
        )
        await self.apply(transition, expected=None)
        return transition.rollout

    async def status(self, model: str) -> dict[str, Any]:
        with self.uow.engine.connect() as conn:
            last = store.latest(conn, model)
            audit = store.history(conn, model, limit=20)
        return {
            "model": model,
            "rollout": last.summary() if last else None,
            "history": audit,
        }
