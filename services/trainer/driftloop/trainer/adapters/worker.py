"""Training in a worker process with a time limit: a timeout, a crash or an exception of the
fit is an outcome the handler reports (TrainingFailed), never the end of the service.

One process per training, so a timeout is a kill and memory a fit held goes back to the
system. On Linux and macOS the processes fork from a `forkserver` that imported the training
code (pandas, scikit-learn) once, so a training starts in milliseconds rather than paying the
imports each time; elsewhere `spawn` is used and each training pays them.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Generic, TypeVar

from threadpoolctl import threadpool_limits

logger = logging.getLogger(__name__)

T = TypeVar("T")

PRELOAD = ("driftloop.trainer.domain.training", "sklearn.ensemble", "sklearn.linear_model")
"""Imported once by the forkserver: the fit and the estimators most recipes name."""


class WorkerError(Exception):
    """The work did not finish: `reason` says why, for TrainingFailed."""

    def __init__(self, reason: str, *, kind: str, message: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # "timeout", "crash", or the name of the exception the work raised
        self.message = message or reason  # the exception's own text, when the work raised


@dataclass(frozen=True)
class Finished(Generic[T]):
    value: T
    seconds: float  # time the work itself took in the worker


def _work(
    send: Connection, fn: Callable[..., Any], args: tuple[Any, ...], threads: int | None = None
) -> None:
    """The worker's body: run `fn` with at most `threads` native threads (None: the libraries'
    default), send back ("ok", value, seconds) or ("error", type, text)."""
    started = time.perf_counter()
    try:
        with threadpool_limits(limits=threads):
            value = fn(*args)
        outcome: tuple[Any, ...] = ("ok", value, time.perf_counter() - started)
    except BaseException as exc:  # MemoryError, RecursionError, KeyboardInterrupt: all outcomes
        outcome = ("error", type(exc).__name__, str(exc))
    try:
        send.send(outcome)
    except Exception as exc:  # the value does not pickle: say so rather than die silently
        send.send(("error", type(exc).__name__, f"cannot send the result back: {exc}"))
    finally:
        send.close()


def _noop() -> None:
    """Started once so the forkserver (and its imports) is up before the first training."""


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the training worker was killed by {name}{hint}"
    return f"the training worker exited with code {code} without a result"


def _await_outcome(receive: Connection, process: BaseProcess, limit: float) -> tuple[Any, ...]:
    """Block (in a thread) until the worker answers, dies, or `limit` seconds pass."""
    ready = wait([receive, process.sentinel], timeout=limit)
    if receive in ready:
        try:
            outcome: tuple[Any, ...] = receive.recv()
            return outcome
        except EOFError:  # died before or while sending
            process.join(5)
            return ("crash", _exit_reason(process.exitcode))
    if ready:
        process.join(5)
        return ("crash", _exit_reason(process.exitcode))
    return ("timeout",)


class TrainingWorkers:
    """Runs a picklable function in a fresh worker process, at most `limit` seconds, with at
    most `threads` native threads (OpenMP, BLAS; None: the libraries' default)."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD, *, threads: int | None = None) -> None:
        self.threads = threads
        methods = multiprocessing.get_all_start_methods()
        self.method = "forkserver" if "forkserver" in methods else "spawn"
        self._ctx: Any = multiprocessing.get_context(self.method)  # typeshed has no common Process
        if self.method == "forkserver":
            self._ctx.set_forkserver_preload(list(preload))

    async def warm(self) -> None:
        """Start the forkserver (and its imports) now, off the first training's path."""
        process = self._ctx.Process(target=_noop, name="driftloop-training-warmup")
        try:
            await asyncio.to_thread(process.start)
            await asyncio.to_thread(process.join)
        except OSError:  # the first training starts it instead, and says what is wrong
            logger.warning("cannot start a training worker", exc_info=True)

    async def run(
        self, fn: Callable[..., T], *args: Any, limit: float, limit_name: str = "time limit"
    ) -> Finished[T]:
        """`fn(*args)` in a worker; raises WorkerError on a timeout, a crash or an exception."""
        receive, send = self._ctx.Pipe(duplex=False)
        process: BaseProcess = self._ctx.Process(
            target=_work, args=(send, fn, args, self.threads), name="driftloop-training"
        )
        try:
            await asyncio.to_thread(process.start)
            send.close()  # the worker holds the only writer: its death is EOF here
            outcome = await asyncio.to_thread(_await_outcome, receive, process, limit)
            if outcome[0] == "ok":  # it is exiting: reap it off the event loop
                await asyncio.to_thread(process.join, 5)
        finally:
            if process.pid is not None and process.is_alive():  # timed out, or cancelled
                process.kill()
                process.join(5)
            send.close()
            receive.close()
        if outcome[0] == "ok":
            return Finished(outcome[1], float(outcome[2]))
        if outcome[0] == "timeout":
            logger.warning("training worker stopped at its time limit", extra={"limit": limit})
            raise WorkerError(
                f"training took longer than {limit_name} ({limit:g}s); the worker was stopped",
                kind="timeout",
            )
        if outcome[0] == "crash":
            logger.warning("training worker died", extra={"exitcode": process.exitcode})
            raise WorkerError(str(outcome[1]), kind="crash")
        _, kind, text = outcome
        raise WorkerError(f"{kind}: {text}" if text else kind, kind=str(kind), message=str(text))
