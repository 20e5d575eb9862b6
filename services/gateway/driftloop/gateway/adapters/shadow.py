"""The shadow version in a worker process of its own, off the request path: its Python work
never holds the GIL the champion's requests need, and neither does the publishing of its
records.

One worker per gateway, started from a `forkserver` (or `spawn`) context, never by forking
the running event loop. It loads the shadow versions it is told about through the registry's
digest-checked `load_model` (a tampered artifact is refused there too), answers each job as
the champion answers a request, and makes and publishes each job's record (PredictionBatch,
route "shadow") itself, through a RecordPublisher of its own: its own NATS connection and its
own on-disk spool (`gateway-<port>-shadow.sqlite`), so a killed worker's records are published
by the next one. The gateway's share is what it cannot avoid: after a request is answered, its
job joins the others of that loop turn in one message on a non-blocking pipe (no feeder
thread to wake, no record to spool and publish), and the worker's acknowledgements free the
jobs' places. Jobs beyond `capacity` in flight, jobs of a version the worker refused, jobs
whose record its spool could not take, and the jobs of a worker that dies are dropped and
counted. By default the worker runs only on CPU time nobody else wants (Linux's SCHED_IDLE;
elsewhere nice 10): on a busy machine the shadow falls behind, answers what has queued up
meanwhile in one predict call, and past `capacity` is dropped, rather than take the champion's
CPU; on a machine that is never idle it answers nothing, so `DRIFTLOOP_SHADOW_PRIORITY` can
give it a small share (`low`, nice 10) or an equal one (`normal`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import signal
import struct
import threading
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from driftloop.gateway.adapters.models import LoadedModel, load_version
from driftloop.gateway.adapters.records import MirrorJob, RecordPublisher
from driftloop.gateway.config import ShadowPriority
from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import PredictionBatch
from driftloop.shared.routes import Served

logger = logging.getLogger(__name__)

PRELOAD = ("driftloop.gateway.adapters.shadow", "sklearn.ensemble", "sklearn.compose")
"""Imported once by the forkserver: a restarted worker starts without paying them again."""
BATCH = 64  # jobs answered before the worker's publisher gets a turn, at most
FRAME = struct.Struct("<I")  # each message list on the jobs pipe: its pickle's length, then it
NICENESS = 10  # "low", and "idle" where SCHED_IDLE is not to be had
PARENT_CHECK_S = 1.0  # how often an idle worker checks that its gateway is still alive
EXIT_AFTER_S = 15.0  # how long its bus may take to close once its spool is closed


# The jobs pipe: framed pickles, written without blocking ---------------------------------------


class FrameWriter:
    """Message lists onto a pipe from the event loop, never blocking it: what the pipe cannot
    take now waits in a buffer (bounded by the caller's jobs in flight) and goes when the
    loop says the pipe is writable."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.loop = loop
        self.buffer = bytearray()
        self.broken = False  # the reader is gone: nothing more is written
        self._watching = False

    def send(self, messages: list[tuple[Any, ...]]) -> None:
        if self.broken:
            return
        payload = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
        self.buffer += FRAME.pack(len(payload)) + payload
        if not self._watching:  # else the loop writes it, after what is already waiting
            self._write()

    def _write(self) -> None:
        try:
            written = os.write(self.fd, self.buffer)
        except BlockingIOError:
            written = 0
        except OSError:  # the worker died: its sentinel ends it on the gateway's side
            self.broken = True
            self.buffer.clear()
            written = 0
        del self.buffer[:written]
        waiting = bool(self.buffer)
        if waiting and not self._watching:
            self.loop.add_writer(self.fd, self._write)
        elif self._watching and not waiting:
            self.loop.remove_writer(self.fd)
        self._watching = waiting

    def close(self) -> None:
        if self._watching:
            self.loop.remove_writer(self.fd)
            self._watching = False


class FrameReader:
    """The worker's side: the message lists as they arrive, in order; `closed` at end of file
    (the gateway closed the pipe, or died)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.buffer = bytearray()
        self.messages: deque[tuple[Any, ...]] = deque()
        self.closed = False
        self.arrived = asyncio.Event()

    def on_readable(self) -> None:
        try:
            chunk = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            self.closed = True
            asyncio.get_running_loop().remove_reader(self.fd)
        self.buffer += chunk
        while len(self.buffer) >= FRAME.size:
            (size,) = FRAME.unpack_from(self.buffer)
            if len(self.buffer) < FRAME.size + size:
                break
            self.messages.extend(pickle.loads(self.buffer[FRAME.size : FRAME.size + size]))
            del self.buffer[: FRAME.size + size]
        self.arrived.set()

    async def take(self, limit: int, timeout: float) -> list[tuple[Any, ...]]:
        """Up to `limit` messages, waiting up to `timeout` s for the first."""
        if not self.messages and not self.closed:
            self.arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), timeout)
        taken: list[tuple[Any, ...]] = []
        while self.messages and len(taken) < limit:
            taken.append(self.messages.popleft())
        return taken


# The worker process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs besides its pipes (picklable: it crosses to the forkserver)."""

    tracking_uri: str
    nats_url: str
    spool: Path
    spool_capacity: int
    priority: ShadowPriority = "idle"
    lock_wait: float | None = None  # RecordSpool's: a gateway worker's shadow (spools.py)
    compile_trees: bool = True  # GatewaySettings.compiled_trees


def _worker(jobs: Connection, results: Connection, config: WorkerConfig) -> None:
    """The worker's body. `jobs` carries framed lists of ("shadow", model, served JSON or
    None), ("job", seq, model, version, instances, ids) and ("stop",); `results` carries
    ("done", [seq]) once a job's record is in the worker's spool, ("skipped", [seq]) for jobs
    not answered or not recorded, and ("refused", model, version, reason)."""
    import mlflow
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the gateway stops us
    lower_priority(config.priority)
    threadpool_limits(limits=1)  # as the gateway: no BLAS threads spinning on small batches
    mlflow.set_tracking_uri(config.tracking_uri)
    mlflow.set_registry_uri(config.tracking_uri)
    asyncio.run(_serve(jobs, results, config))


def lower_priority(priority: ShadowPriority) -> None:
    """A shadow is best effort: by default (`idle`) the worker runs when a core would otherwise
    idle. With nice 10 alone it still took a share of a busy 2-core machine, and the
    champion's p50 rose ~30 % (docs/benchmarks.md); but a machine that is never idle then
    gives it no CPU at all, which `low` (nice 10) and `normal` trade back."""
    if priority == "normal":
        return
    if priority == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except (AttributeError, OSError):  # not Linux
            pass
    with suppress(OSError):
        os.nice(NICENESS)


async def _serve(jobs: Connection, results: Connection, config: WorkerConfig) -> None:
    settings = Settings.model_construct(nats_url=config.nats_url)
    async with connect_bus(settings, service="gateway-shadow", ensure=False) as bus:
        publisher = RecordPublisher(
            bus, capacity=config.spool_capacity, spool=config.spool, lock_wait=config.lock_wait
        )
        publishing = asyncio.create_task(publisher.run())
        inbox = FrameReader(jobs.fileno())
        asyncio.get_running_loop().add_reader(inbox.fd, inbox.on_readable)
        try:
            await _work(inbox, publisher, results, compile_trees=config.compile_trees)
        finally:
            await publisher.flush()  # what is left stays in the spool for the next worker
            publishing.cancel()
            with suppress(asyncio.CancelledError):
                await publishing
            publisher.close()
            # Its records are on disk and its spool let go: a bus that cannot close (a server
            # frozen or gone while its gateway was killed) must not keep it alive for ever.
            deadline = threading.Timer(EXIT_AFTER_S, os._exit, (0,))
            deadline.daemon = True  # a clean close exits at once, without it
            deadline.start()


async def _work(
    inbox: FrameReader, publisher: RecordPublisher, results: Connection, *, compile_trees: bool
) -> None:
    parent = multiprocessing.parent_process()
    shadows: dict[str, LoadedModel] = {}
    while True:
        batch = await inbox.take(BATCH, PARENT_CHECK_S)
        if not batch:
            if inbox.closed or (parent is not None and not parent.is_alive()):
                return  # the gateway is gone (killed): no orphan
            continue
        group: list[tuple[Any, ...]] = []
        for message in batch:
            if message[0] == "job":
                group.append(message)
                continue
            _record_all(group, shadows, publisher, results)  # sent before: the old version
            group = []
            if message[0] == "stop":
                return
            _apply(message[1], message[2], shadows, results, compile_trees=compile_trees)
        _record_all(group, shadows, publisher, results)
        await asyncio.sleep(0)  # the publisher's turn


def _record_all(
    group: list[tuple[Any, ...]],
    shadows: dict[str, LoadedModel],
    publisher: RecordPublisher,
    results: Connection,
) -> None:
    """Answer the jobs, spool their records, and tell the gateway which are done."""
    done, skipped = _answer(group, shadows)
    kept: list[int] = []
    for seq, model, batch_id, payload in done:
        # a record the spool refuses (full: the bus has been away long) is a dropped job
        if publisher.offer_json(model, batch_id, payload, route="shadow"):
            kept.append(seq)
        else:
            skipped.append(seq)
    if kept:
        results.send(("done", kept))
    if skipped:
        results.send(("skipped", skipped))


def _apply(
    model: str,
    served_json: str | None,
    shadows: dict[str, LoadedModel],
    results: Connection,
    *,
    compile_trees: bool = True,
) -> None:
    if served_json is None:
        shadows.pop(model, None)
        return
    served = Served.model_validate_json(served_json)
    if model in shadows and shadows[model].version == served.version:
        return
    shadows.pop(model, None)
    try:
        shadows[model] = load_version(model, served, compile_trees=compile_trees)
    except Exception as exc:  # TamperedArtifactError included: refused, and said so
        results.send(("refused", model, served.version, f"{type(exc).__name__}: {exc}"[:500]))


def _answer(
    group: list[tuple[Any, ...]], shadows: dict[str, LoadedModel]
) -> tuple[list[tuple[int, str, str, bytes]], list[int]]:
    """The jobs' records: each answered job's (seq, model, record id, record JSON), and the
    jobs of a version the worker does not hold.

    A model's first job is predicted on its own, as the champion predicts a request: its
    latency is a request's, the figure the deployer's p95 gate compares with the champion's.
    The jobs that queued up behind it are answered in one predict call (a one-row predict is
    mostly per-call overhead: one call for many rows is what lets a worker on idle CPU keep
    up), their records without a latency; if that call fails, each of them is predicted on
    its own, so an error is the job's that caused it."""
    done: list[tuple[int, str, str, bytes]] = []
    skipped: list[int] = []
    queued: dict[str, list[tuple[Any, ...]]] = {}
    for job in group:
        _, seq, model, version, _instances, _ids = job
        shadow = shadows.get(model)
        if shadow is None or shadow.version != version:
            skipped.append(seq)
        else:
            queued.setdefault(model, []).append(job)
    for model, jobs in queued.items():
        shadow = shadows[model]
        done.append(_answer_one(shadow, jobs[0]))
        rest = jobs[1:]
        if not rest:
            continue
        try:
            predictions, _ = shadow.predict([row for job in rest for row in job[4]])
        except Exception:  # whose row? each job on its own says
            done.extend(_answer_one(shadow, job) for job in rest)
            continue
        start = 0
        for job in rest:
            end = start + len(job[4])
            done.append(_record(job, predictions[start:end], None, None))
            start = end
    return done, skipped


def _answer_one(shadow: LoadedModel, job: tuple[Any, ...]) -> tuple[int, str, str, bytes]:
    """A job predicted on its own, its latency as the call's CPU time: the worker runs at a low
    priority on purpose, so its wall-clock time measures how busy the machine is, not the
    model. The deployer compares this with the champion's latency (wall-clock, at full
    priority), which it can only flatter the shadow by what a busy machine adds to the
    champion's figure; a model that computes several times longer is still caught."""
    started = time.thread_time()
    try:
        predictions, _ = shadow.predict(job[4])
        error = None
    except Exception as exc:  # a failing shadow is a figure, not an outage
        predictions, error = [], f"{type(exc).__name__}: {exc}"[:500]
    return _record(job, predictions, error, (time.thread_time() - started) * 1000)


def _record(
    job: tuple[Any, ...], predictions: list[Any], error: str | None, latency_ms: float | None
) -> tuple[int, str, str, bytes]:
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
    return seq, model, batch.batch_id, batch.model_dump_json().encode()


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

    `offer` never blocks: a job joins the loop turn's others, sent in one message once the
    turn's requests are answered, or, when `capacity` jobs are already in flight or the worker
    is down, is dropped and counted. `run` keeps a worker alive (restarting one that dies);
    `stop` ends it cleanly.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        nats_url: str,
        spool: Path,
        spool_capacity: int = 100_000,
        capacity: int = 256,
        dropped: Counter | None = None,
        restart_delay: float = 1.0,
        priority: ShadowPriority = "idle",
        lock_wait: float | None = None,
        compile_trees: bool = True,
    ) -> None:
        self.config = WorkerConfig(
            tracking_uri, nats_url, spool, spool_capacity, priority, lock_wait, compile_trees
        )
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
        self._writer: FrameWriter | None = None
        self._pending: list[tuple[Any, ...]] = []  # this loop turn's messages
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
            self._writer is None
            or len(self.in_flight) >= self.capacity
            or self.refused.get(job.model) == job.version
        ):
            self._drop(job.model, job.version)
            return False
        self._seq += 1
        self.in_flight[self._seq] = _InFlight(job.model, job.version)
        self._send(("job", self._seq, job.model, job.version, job.instances, job.ids))
        return True

    def _send(self, message: tuple[Any, ...]) -> None:
        """Queue a message for the end of this loop turn: the request that mirrors a job has
        written its answer by then, and the turn's jobs go in one write."""
        if self._writer is None:
            return  # no worker: the next one is told the shadows when it starts
        if not self._pending:
            self._writer.loop.call_soon(self._flush)
        self._pending.append(message)

    def _flush(self) -> None:
        messages, self._pending = self._pending, []
        if self._writer is not None and messages:
            self._writer.send(messages)

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
        jobs_reader, jobs_writer = self._ctx.Pipe(duplex=False)
        process: BaseProcess = self._ctx.Process(
            target=_worker,
            args=(jobs_reader, send, self.config),
            name="driftloop-shadow",
            daemon=True,  # a gateway that exits normally takes its worker with it
        )
        exited: asyncio.Future[None] = loop.create_future()
        self.process = process
        try:
            await asyncio.to_thread(process.start)
            send.close()  # the worker holds the only writer: its death is EOF here
            jobs_reader.close()  # and the only reader of its jobs: a write then fails at once
            self._writer = FrameWriter(jobs_writer.fileno(), loop)
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
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._pending = []
            jobs_writer.close()
            if not jobs_reader.closed:
                jobs_reader.close()
            if not receive.closed:
                loop.remove_reader(receive.fileno())
                receive.close()
            if not exited.done():
                with suppress(ValueError):  # cancelled before it started: no sentinel
                    loop.remove_reader(process.sentinel)

    def _receive(self, receive: Connection, limit: int = 64) -> None:
        """Up to `limit` messages: then the loop's other callbacks run, and this one again
        while more are waiting."""
        try:
            for _ in range(limit):
                if receive.closed or not receive.poll():
                    return
                self._handle(receive.recv())
        except (EOFError, OSError):  # the worker is gone: its sentinel says so too
            asyncio.get_running_loop().remove_reader(receive.fileno())

    def _handle(self, message: tuple[Any, ...]) -> None:
        if message[0] == "done":
            for seq in message[1]:
                self.in_flight.pop(seq, None)
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

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the worker answer and spool what it holds, then end it (killed after
        `timeout` s; its spool keeps what it had not published for the next start)."""
        self._stopping = True
        if self._writer is None:
            self._kill()
        else:
            self._send(("stop",))
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            self._kill()
