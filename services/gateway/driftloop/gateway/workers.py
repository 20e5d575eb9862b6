"""Several gateway worker processes on one host:port (DRIFTLOOP_GATEWAY_WORKERS > 1).

The gateway process becomes a small supervisor: it starts one worker process per slot
(multiprocessing's `spawn`: a fresh interpreter, not a fork of this one), restarts one that
dies (in its slot, so it takes its spools back: spools.py), forwards SIGTERM and SIGINT for a
graceful stop (each worker answers what it holds and flushes its spool, as a single gateway
does) and kills what is left after STOP_TIMEOUT s. Each worker binds its own socket to the
port with SO_REUSEPORT, and the kernel spreads new connections over the sockets that listen;
a worker listens only once its lifespan has started (asyncio's create_server calls listen),
so no connection waits on a worker still loading. A worker dies with its supervisor
(PR_SET_PDEATHSIG, SIGKILL): a `kill -9` of the gateway leaves nobody on the port, and every
record the workers answered is in their spools for the next start.

Metrics: prometheus_client's multiprocess mode, in a directory the supervisor empties at
start and removes at the end (HOME/run/gateway-<port>-metrics); a dead worker's live gauges
are dropped (`mark_process_dead`), its counters kept, so totals add up across restarts.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from contextlib import suppress
from functools import partial
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from driftloop.gateway.config import GatewaySettings
from driftloop.gateway.spools import WorkerSlot
from driftloop.shared import service

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 30.0  # seconds a worker has to stop gracefully before it is killed
QUICK_DEATH = 30.0  # a worker dead within this many seconds of its start is restarted later
PR_SET_PDEATHSIG = 1


def metrics_dir(settings: GatewaySettings) -> Path:
    return settings.run_dir / f"gateway-{settings.gateway_port}-metrics"


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT, not listening yet (uvicorn's
    startup makes it listen once the app's lifespan has started)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # protocol says TCP; without it every answer waited ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    return sock


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux); exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


def run_worker(settings: GatewaySettings, worker: WorkerSlot, parent: int) -> None:
    """A worker process's body (spawned: PROMETHEUS_MULTIPROC_DIR is in its environment
    before anything imports prometheus_client)."""
    # A group of its own: a terminal's Ctrl-C (SIGINT to its foreground group) reaches the
    # supervisor alone, which tells each worker once; a second signal would make uvicorn skip
    # its graceful stop (open requests, the spool's flush).
    os.setpgid(0, 0)
    die_with_parent(parent)
    from driftloop.gateway.main import serve

    service.run("gateway", partial(serve, worker=worker), settings)


class Supervisor:
    """The gateway's worker processes (see the module's doc)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.count = settings.worker_count()
        self.ctx: Any = multiprocessing.get_context("spawn")  # typeshed: no common Process
        self.workers: dict[int, BaseProcess] = {}
        self.started: dict[int, float] = {}
        self.delay: dict[int, float] = {}
        self.due: dict[int, float] = {}  # slot -> when a dead worker is restarted
        self.stopping = False
        self.signalled: set[int] = set()  # pids told to stop

    def start(self, slot: int) -> None:
        process: BaseProcess = self.ctx.Process(
            target=run_worker,
            args=(self.settings, WorkerSlot(slot, self.count), os.getpid()),
            name=f"driftloop-gateway-{slot}",
        )
        process.start()
        self.workers[slot], self.started[slot] = process, time.monotonic()
        logger.info("gateway worker started", extra={"slot": slot, "pid": process.pid})

    def run(self) -> None:
        directory = metrics_dir(self.settings)
        shutil.rmtree(directory, ignore_errors=True)  # a killed run's files: not ours to sum
        directory.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # the workers' environment
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            for slot in range(self.count):
                self.start(slot)
            while not self.stopping:
                self._watch(directory)
            self._stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.stopping = True
        self._tell_to_stop()

    def _tell_to_stop(self) -> None:
        """SIGTERM each worker once (a second one would make uvicorn skip waiting for its
        requests): it stops gracefully, flushing its spool."""
        for process in self.workers.values():
            if process.pid is not None and process.pid not in self.signalled:
                self.signalled.add(process.pid)
                with suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def _watch(self, directory: Path) -> None:
        sentinels = {p.sentinel: slot for slot, p in self.workers.items()}
        for ready in wait(list(sentinels), timeout=0.5):
            slot = sentinels[ready]  # type: ignore[index]  # wait() returns what it was given
            process = self.workers.pop(slot)
            process.join()
            self._mark_dead(process, directory)
            if self.stopping:
                return
            quick = time.monotonic() - self.started[slot] < QUICK_DEATH
            # one that keeps dying at once (a port taken, a bad setting) is retried less often
            delay = min((self.delay.get(slot) or 0.25) * 2, 30.0) if quick else 0.0
            self.delay[slot], self.due[slot] = delay, time.monotonic() + delay
            logger.warning(
                "gateway worker died; restarting it",
                extra={
                    "slot": slot,
                    "pid": process.pid,
                    "exitcode": process.exitcode,
                    "in_s": delay,
                },
            )
        for slot, due in list(self.due.items()):
            if time.monotonic() >= due and not self.stopping:
                del self.due[slot]
                self.start(slot)

    @staticmethod
    def _mark_dead(process: BaseProcess, directory: Path) -> None:
        from prometheus_client import multiprocess

        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid, str(directory))  # type: ignore[no-untyped-call]  # prometheus_client: untyped

    def _stop(self) -> None:
        self._tell_to_stop()  # those started after the signal too
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.warning(
                    "gateway worker did not stop; killing it", extra={"pid": process.pid}
                )
                process.kill()
                process.join(5)


def supervise(settings: GatewaySettings) -> None:
    """Run `settings.worker_count()` gateway workers until SIGTERM or SIGINT."""
    from driftloop.gateway.app import check_access_mode

    check_access_mode(settings)  # refused here, once, rather than by every worker in a loop
    reuseport_socket(settings.gateway_host, settings.gateway_port).close()  # port free?
    Supervisor(settings).run()
