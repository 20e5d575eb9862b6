"""Where each gateway worker keeps its records, and how the spools of workers that no longer
exist are published by one that does.

A worker is a slot of `count` (DRIFTLOOP_GATEWAY_WORKERS): slot 0 keeps the single-process
gateway's file names (`gateway-<port>.sqlite`, `gateway-<port>-shadow.sqlite`), so a gateway
that gains workers still drains what it spooled before; slot i > 0 keeps
`gateway-<port>-w<i>.sqlite` and `gateway-<port>-w<i>-shadow.sqlite`. A worker restarted in
its slot takes its spools back. The spools of slots at or past `count` (a run with more
workers, killed) are orphans: every worker tries them at start and every ADOPT_EVERY s, takes
the one whose lock it gets (its owner, an old shadow process still ending, holds it while it
runs: `RecordSpool(lock_wait=...)`), publishes its records, keeps its dead letters in its own
spool, and deletes it while still holding the lock.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from driftloop.gateway.adapters.records import RecordPublisher, SpoolBusyError
from driftloop.shared.bus import Bus

logger = logging.getLogger(__name__)

ADOPT_EVERY = 10.0  # seconds between two looks for orphaned spools
OWNER_LOCK_WAIT = 60.0  # seconds a worker waits for its slot's spool (a dying predecessor's)


@dataclass(frozen=True)
class WorkerSlot:
    """This process's place among the gateway's worker processes."""

    slot: int = 0
    count: int = 1

    @property
    def multiprocess(self) -> bool:
        return self.count > 1


def spool_paths(spools: Path, port: int, slot: int) -> tuple[Path, Path]:
    """The record spool and the shadow's spool of worker `slot` (see the module's doc)."""
    stem = f"gateway-{port}" if slot == 0 else f"gateway-{port}-w{slot}"
    return spools / f"{stem}.sqlite", spools / f"{stem}-shadow.sqlite"


def lock_wait(slot: int) -> float | None:
    """How long a worker waits for its own spools' lock; None (no lock) for slot 0, whose
    files are never an orphan (the single-process gateway's, unchanged)."""
    return None if slot == 0 else OWNER_LOCK_WAIT


def orphans(spools: Path, port: int, count: int) -> list[Path]:
    """The spools of slots at or past `count`, oldest slot first."""
    pattern = re.compile(rf"gateway-{port}-w(\d+)(-shadow)?\.sqlite")
    found = []
    for path in spools.glob(f"gateway-{port}-w*.sqlite"):
        match = pattern.fullmatch(path.name)
        if match and int(match.group(1)) >= count:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def remove(path: Path) -> None:
    """A spool's files: the database, its log and its shared memory."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def adopt(
    path: Path,
    bus: Bus,
    own: RecordPublisher,
    *,
    capacity: int,
    dead_letters: Counter | None = None,
) -> int | None:
    """Publish the records of the orphaned spool `path` and delete it; None when its owner
    (or another adopter) holds it. The number of records published."""
    try:
        publisher = RecordPublisher(
            bus, capacity=capacity, spool=path, dead_letters=dead_letters, lock_wait=0
        )
    except SpoolBusyError:
        return None
    assert publisher.spool is not None
    try:
        count = publisher.pending
        await publisher.publish_spooled()
        buried = publisher.spool.dead_letters()
        if own.spool is not None:
            for subject, msg_id, payload, error in buried:
                own.spool.bury(subject, msg_id, payload, error)
        remove(path)  # still locked: nobody opens it meanwhile
    finally:
        publisher.close()
    logger.info(
        "orphaned spool published and removed",
        extra={"spool": path.name, "records": count, "dead_letters": len(buried)},
    )
    return count


async def adopt_orphans(
    spools: Path,
    port: int,
    worker: WorkerSlot,
    bus: Bus,
    own: RecordPublisher,
    *,
    capacity: int,
    dead_letters: Counter | None = None,
    every: float = ADOPT_EVERY,
) -> None:
    """Adopt orphaned spools now and every `every` s (one whose owner was still ending at
    the first look is taken at a later one)."""
    while True:
        for path in orphans(spools, port, worker.count):
            try:
                await adopt(path, bus, own, capacity=capacity, dead_letters=dead_letters)
            except Exception:  # tried again at the next look
                logger.exception("adopting an orphaned spool failed", extra={"spool": path.name})
        await asyncio.sleep(every)
