"""The shadow version in a worker process of its own, off the request path: its Python work
never holds the GIL the champion's requests need.

One worker per gateway, started from a `forkserver` (or `spawn`) context, never by forking
the running event loop. It loads the shadow versions it is told about through the registry's
digest-checked `load_model` (a tampered artifact is refused there too), takes every queued job
at once and answers them in as few predict calls as it can, and makes each job's record
(PredictionBatch, route "shadow") itself. The gateway keeps each job until its record comes
back and hands it to its RecordPublisher; jobs beyond `capacity` in flight, jobs of a version
the worker refused, and the jobs of a worker that dies are dropped and counted. The worker runs
at a lower scheduling priority (nice 10): on a saturated machine the shadow falls behind and
is dropped rather than taking the champion's CPU.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import signal
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import Counter

from driftloop.gateway.adapters.models import LoadedModel, load_version
from driftloop.gateway.adapters.records import MirrorJob, RecordPublisher
from driftloop.shared.events import PredictionBatch
from driftloop.shared.routes import Served

logger = logging.getLogger(__name__)

PRELOAD = ("driftloop.gateway.adapters.shadow", "sklearn.ensemble", "sklearn.compose")
"""Imported once by the forkserver: a restarted worker starts without paying them again."""
BATCH = 64  # jobs taken from the channel at once, at most
NICENESS = 10  # the worker's scheduling priority below the gateway's: a shadow is best effort
PARENT_CHECK_S = 1.0  # how often an idle worker checks that its gateway is still alive


# The worker process ---------------------------------------------------------------------------


def _worker(jobs: Any, results: Connection, tracking_uri: str) -> None:
    """The worker's body. `jobs` carries ("shadow", model, served JSON or None),
    ("job", seq, model, version, instances, ids) and ("stop",); `results` carries
    ("done", [(seq, batch_id, record JSON)]), ("skipped", [seq]) and
    ("refused", model, version, reason). The records (PredictionBatch, route "shadow") are
    made here: their validation and JSON cost the gateway's event loop nothing."""
    import mlflow
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the gateway stops us
    with suppress(OSError):  # on a busy machine the champion's requests go first
        os.nice(NICENESS)
    threadpool_limits(limits=1)  # as the gateway: no BLAS threads spinning on small batches
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    parent = multiprocessing.parent_process()
    shadows: dict[str, LoadedModel] = {}
    while True:
        try:
            batch = [jobs.get(timeout=PARENT_CHECK_S)]
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return  # the gateway is gone (killed): no orphan
            continue
        while len(batch) < BATCH:
            try:
                batch.append(jobs.get_nowait())
            except queue.Empty:
                break
        group: list[tuple[Any, ...]] = []
        for message in batch:
            if message[0] == "job":
                group.append(message)
                continue
            _answer(group, shadows, results)  # jobs sent before the change: the old version
            group = []
            if message[0] == "stop":
                return
            _apply(message[1], message[2], shadows, results)
        _answer(group, shadows, results)


def _apply(
    model: str, served_json: str | None, shadows: dict[str, LoadedModel], results: Connection
) -> None:
    if served_json is None:
        shadows.pop(model, None)
        return
    served = Served.model_validate_json(served_json)
    if model in shadows and shadows[model].version == served.version:
        return
    shadows.pop(model, None)
    try:
        shadows[model] = load_version(model, served)
    except Exception as exc:  # TamperedArtifactError included: refused, and said so
        results.send(("refused", model, served.version, f"{type(exc).__name__}: {exc}"[:500]))


def _predict(shadow: LoadedModel, instances: list[dict[str, Any]]) -> tuple[list[Any], float]:
    """The answers, and the call's latency as its CPU time: the worker runs at a low priority
    on purpose, so its wall-clock time measures how busy the machine is, not the model. The
    deployer compares this with the champion's latency (wall-clock, at full priority), which
    it can only flatter the shadow by what a busy machine adds to the champion's figure; a
    model that computes several times longer is still caught."""
    started = time.thread_time()
    predictions, _ = shadow.predict(instances)
    return predictions, (time.thread_time() - started) * 1000


def _answer(
    group: list[tuple[Any, ...]], shadows: dict[str, LoadedModel], results: Connection
) -> None:
    """Each job predicted on its own, as the champion predicts each request: its latency is
    then the figure the deployer's p95 gate compares with the champion's (one call for many
    jobs would give a batch's time, or a share of it, and neither is a request's latency),
    and an error belongs to the job that caused it. What is sent back is batched."""
    done: list[tuple[int, str, bytes]] = []
    skipped: list[int] = []
    for job in group:
        _, seq, model, version, instances, _ids = job
        shadow = shadows.get(model)
        if shadow is None or shadow.version != version:
            skipped.append(seq)
            continue
        started = time.thread_time()
        try:
            predictions, ms = _predict(shadow, instances)
            done.append(_record(job, predictions, None, ms))
        except Exception as exc:  # a failing shadow is a figure, not an outage
            ms = (time.thread_time() - started) * 1000
            done.append(_record(job, [], f"{type(exc).__name__}: {exc}"[:500], ms))
    if done:
        results.send(("done", done))
    if skipped:
        results.send(("skipped", skipped))


def _record(
    job: tuple[Any, ...], predictions: list[Any], error: str | None, latency_ms: float
) -> tuple[int, str, bytes]:
    _, seq, model, version, instances, ids = job
    batch = PredictionBatch(
        model=model,
        version=version,
        route="shadow",
        ids=ids,
        instances=instances,
        predictions=predictions,
        latency_ms=latency_ms,
        at=datetime.now(UTC),
        error=error,
    )
    return seq, batch.batch_id, batch.model_dump_json().encode()


# The gateway's side ---------------------------------------------------------------------------


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True)
class _InFlight:
    model: str
    version: str


class ShadowWorker:
    """Mirrors served requests to the shadow version running in a worker process.

    `offer` never blocks: a job goes on the worker's channel (a queue fed by its own thread),
    or, when `capacity` jobs are already in flight or the worker is down, is dropped and
    counted. `run` keeps a worker alive (restarting one that dies); `stop` ends it cleanly.
    """

    def __init__(
        self,
        records: RecordPublisher,
        *,
        tracking_uri: str,
        capacity: int = 256,
        dropped: Counter | None = None,
        restart_delay: float = 1.0,
    ) -> None:
        self.records = records
        self.tracking_uri = tracking_uri
        self.capacity = capacity
        self.dropped = dropped
        self.restart_delay = restart_delay
        methods = multiprocessing.get_all_start_methods()
        self.method = "forkserver" if "forkserver" in methods else "spawn"
        self._ctx: Any = multiprocessing.get_context(self.method)  # typeshed: no common Process
        if self.method == "forkserver":
            self._ctx.set_forkserver_preload(list(PRELOAD))
        self.shadows: dict[str, Served] = {}  # what the worker is told to serve
        self.refused: dict[str, str] = {}  # model -> shadow version the worker could not load
        self.in_flight: dict[int, _InFlight] = {}
        self.restarts = 0
        self.process: BaseProcess | None = None
        self._jobs: Any = None
        self._seq = 0
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.is_alive() else None

    def set_shadow(self, model: str, served: Served | None) -> None:
        """The routes changed: tell the worker to load (or forget) the model's shadow."""
        current = self.shadows.get(model)
        if (current.version if current else None) == (served.version if served else None):
            return
        if served is None:
            self.shadows.pop(model, None)
        else:
            self.shadows[model] = served
        self.refused.pop(model, None)
        self._send(("shadow", model, served.model_dump_json() if served else None))

    def offer(self, job: MirrorJob) -> bool:
        if (
            self._jobs is None
            or len(self.in_flight) >= self.capacity
            or self.refused.get(job.model) == job.version
        ):
            self._drop(job.model, job.version)
            return False
        self._seq += 1
        self.in_flight[self._seq] = _InFlight(job.model, job.version)
        if not self._send(("job", self._seq, job.model, job.version, job.instances, job.ids)):
            del self.in_flight[self._seq]
            self._drop(job.model, job.version)
            return False
        return True

    def _send(self, message: tuple[Any, ...]) -> bool:
        if self._jobs is None:
            return False
        try:
            self._jobs.put_nowait(message)  # unbounded: bounded by in_flight; a thread writes
        except (ValueError, OSError):  # closed under us
            return False
        return True

    def _drop(self, model: str, version: str, count: int = 1) -> None:
        if self.dropped is not None:
            self.dropped.labels(model, version).inc(count)

    async def run(self) -> None:
        """Keep a worker running until `stop`; a worker that dies is restarted and its jobs
        in flight are counted as dropped."""
        delay = self.restart_delay / 2  # doubled at the first quick death
        try:
            while not self._stopping:
                started = time.monotonic()
                code = await self._run_worker()
                self._drop_in_flight()
                if self._stopping:
                    break
                self.restarts += 1
                # one that keeps dying at once (a shadow that crashes it on load) is retried
                # less and less often, up to once a minute
                quick = time.monotonic() - started < 30
                delay = min(delay * 2, 60.0) if quick else self.restart_delay
                logger.warning(
                    "shadow worker died; restarting it",
                    extra={"exitcode": code, "restarts": self.restarts, "in_s": delay},
                )
                await asyncio.sleep(delay)
        finally:
            self._kill()
            self._stopped.set()

    async def _run_worker(self) -> int | None:
        loop = asyncio.get_running_loop()
        receive, send = self._ctx.Pipe(duplex=False)
        jobs = self._ctx.Queue()
        process: BaseProcess = self._ctx.Process(
            target=_worker,
            args=(jobs, send, self.tracking_uri),
            name="driftloop-shadow",
            daemon=True,  # a gateway that exits normally takes its worker with it
        )
        exited: asyncio.Future[None] = loop.create_future()
        self.process = process
        try:
            await asyncio.to_thread(process.start)
            send.close()  # the worker holds the only writer: its death is EOF here
            self._jobs = jobs
            for model, served in self.shadows.items():
                self._send(("shadow", model, served.model_dump_json()))
            loop.add_reader(receive.fileno(), self._receive, receive)
            loop.add_reader(process.sentinel, _settle, exited)
            logger.info("shadow worker started", extra={"pid": process.pid, "via": self.method})
            await exited
            loop.remove_reader(process.sentinel)
            self._receive(receive, limit=1 << 30)  # all it answered before it ended
            await asyncio.to_thread(process.join, 5)
            return process.exitcode
        finally:
            self._jobs = None
            if not receive.closed:
                loop.remove_reader(receive.fileno())
                receive.close()
            if not exited.done():
                with suppress(ValueError):  # cancelled before it started: no sentinel
                    loop.remove_reader(process.sentinel)
            jobs.cancel_join_thread()  # a dead reader must not hold the gateway's exit
            jobs.close()

    def _receive(self, receive: Connection, limit: int = 64) -> None:
        """Up to `limit` messages (each up to BATCH jobs' records): then the loop's other
        callbacks run, and this one again while more are waiting."""
        try:
            for _ in range(limit):
                if receive.closed or not receive.poll():
                    return
                self._handle(receive.recv())
        except (EOFError, OSError):  # the worker is gone: its sentinel says so too
            asyncio.get_running_loop().remove_reader(receive.fileno())

    def _handle(self, message: tuple[Any, ...]) -> None:
        if message[0] == "done":
            for seq, batch_id, payload in message[1]:
                job = self.in_flight.pop(seq, None)
                if job is not None:
                    self.records.offer_json(job.model, batch_id, payload, route="shadow")
        elif message[0] == "skipped":
            for seq in message[1]:
                job = self.in_flight.pop(seq, None)
                if job is not None:
                    self._drop(job.model, job.version)
        elif message[0] == "refused":
            _, model, version, reason = message
            self.refused[model] = version
            logger.error(
                "shadow version refused by the worker",
                extra={"model": model, "version": version, "reason": reason},
            )

    def _drop_in_flight(self) -> None:
        for job in self.in_flight.values():
            self._drop(job.model, job.version)
        self.in_flight.clear()

    def _kill(self) -> None:
        process = self.process
        if process is not None and process.pid is not None and process.is_alive():
            process.kill()
            process.join(2)

    async def stop(self, timeout: float = 5.0) -> None:
        """Let the worker answer what it holds, then end it (killed after `timeout` s)."""
        self._stopping = True
        if not self._send(("stop",)):
            self._kill()
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            self._kill()
