"""Adaptive batching on the event loop: requests for one model version that are waiting at the
same time are predicted in one call, each answered with its own rows' share. Which requests go
together is domain/batching.py's; this module holds the queues and the futures.

The call runs on the event loop, not in a worker thread: scikit-learn's predict holds the GIL
for most of a small batch (a forest's per-tree Python), so a thread only made the loop and the
predict take turns on the GIL, each waiting out the other's switch interval (RandomForest, 16
connections: 430 req/s in a thread, 939 on the loop; docs/benchmarks.md). While a batch is
predicted, the requests arriving wait in their sockets and queue in the turns after it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from driftloop.gateway.adapters.models import LoadedModel
from driftloop.gateway.domain.batching import BatchBounds, finite, keep_gathering, split, take

logger = logging.getLogger(__name__)

Answer = tuple[list[Any], list[list[float]] | None]  # predictions, probabilities (or None)


@dataclass
class _Waiting:
    model: LoadedModel
    instances: list[dict[str, Any]]
    answer: asyncio.Future[Answer]


@dataclass
class _Queue:
    """The requests waiting for one model version, and the task draining them (None: idle).
    It holds no model between bursts: a retired version leaves an empty deque behind."""

    waiting: deque[_Waiting] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class Batcher:
    """Predicts concurrent requests for the same loaded version together, within `bounds`.

    A request joins its version's queue; the queue's task gathers a batch (event-loop turns
    while requests already received keep joining it: a few quiet turns end it, a full batch
    or bounds.max_wait_s at once), predicts it in one call and hands each request its share.
    A failed or non-finite batch is predicted again request by request, so only a bad request
    fails. Bounds off: each request is predicted at once, alone. `observe(model, version,
    rows, seconds, cpu_seconds)` is told of every predict call; `nobody_coming()` says when no
    other request can join a forming batch (occupancy.py), which then goes at once: a request
    that finds its queue idle then is predicted within its own call, on its own turn."""

    def __init__(
        self,
        bounds: BatchBounds,
        *,
        observe: Callable[[str, str, int, float, float], None],
        nobody_coming: Callable[[], bool] = lambda: False,
    ) -> None:
        self.bounds = bounds
        self.observe = observe
        self.nobody_coming = nobody_coming
        self._queues: dict[tuple[str, str], _Queue] = {}

    async def predict(self, chosen: LoadedModel, instances: list[dict[str, Any]]) -> Answer:
        """The model's answers for these rows (raises what the model raised, or ValueError
        when it answered NaN or Infinity)."""
        queue = self._queues.setdefault((chosen.model, chosen.version), _Queue())
        if not self.bounds.enabled or (queue.task is None and self.nobody_coming()):
            # Batching off, or nothing forming and nobody can join: predict now, on this turn,
            # rather than through a drain task and the turns it waits (in which other work,
            # such as the record publisher's, would run ahead of this request).
            return _checked(self._call(chosen, instances))
        loop = asyncio.get_running_loop()
        waiting = _Waiting(chosen, instances, loop.create_future())
        queue.waiting.append(waiting)
        if queue.task is None:
            queue.task = loop.create_task(self._drain(queue))
        return await waiting.answer

    async def _drain(self, queue: _Queue) -> None:
        batch: list[_Waiting] = []
        try:
            while queue.waiting:
                await self._gather(queue)
                sizes = [len(w.instances) for w in queue.waiting]
                batch = [queue.waiting.popleft() for _ in range(take(sizes, self.bounds.max_rows))]
                try:
                    self._serve(batch)
                except Exception as exc:  # a fault of ours: fail the batch, never hang it
                    logger.exception("batch not served")
                    for w in batch:
                        _settle(w, exc)
        finally:
            queue.task = None
            for w in [*batch, *queue.waiting]:  # cancelled (shutdown): nobody left waiting
                w.answer.cancel()

    async def _gather(self, queue: _Queue) -> None:
        loop = asyncio.get_running_loop()
        start, quiet = loop.time(), 0
        while keep_gathering(
            [len(w.instances) for w in queue.waiting],
            quiet=quiet,
            waited_s=loop.time() - start,
            bounds=self.bounds,
            nobody_coming=self.nobody_coming(),
        ):
            before = len(queue.waiting)
            await asyncio.sleep(0)
            quiet = 0 if len(queue.waiting) > before else quiet + 1

    def _serve(self, batch: list[_Waiting]) -> None:
        rows = [row for w in batch for row in w.instances]
        try:
            predictions, probabilities = _checked(self._call(batch[0].model, rows))
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            logger.warning(
                "batch predict failed: each request alone",
                extra={
                    "model": batch[0].model.model,
                    "version": batch[0].model.version,
                    "requests": len(batch),
                    "error": f"{type(exc).__name__}: {exc}"[:200],
                },
            )
            for w in batch:  # so that only a bad request fails
                try:
                    _settle(w, _checked(self._call(w.model, w.instances)))
                except Exception as alone:
                    _settle(w, alone)
            return
        sizes = [len(w.instances) for w in batch]
        shares = split(sizes, predictions)
        chances = split(sizes, probabilities) if probabilities is not None else [None] * len(batch)
        for w, share, chance in zip(batch, shares, chances, strict=True):
            _settle(w, (share, chance))

    def _call(self, chosen: LoadedModel, rows: list[dict[str, Any]]) -> Answer:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return chosen.predict(rows)
        finally:
            self.observe(
                chosen.model,
                chosen.version,
                len(rows),
                time.perf_counter() - started,
                time.thread_time() - cpu,
            )


def _checked(answer: Answer) -> Answer:
    if not finite(*answer):
        raise ValueError("the model answered NaN or Infinity")
    return answer


def _settle(waiting: _Waiting, outcome: Answer | BaseException) -> None:
    if waiting.answer.done():  # its request was cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        waiting.answer.set_exception(outcome)
    else:
        waiting.answer.set_result(outcome)
