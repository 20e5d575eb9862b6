"""The shadow worker predicts a model's first job on its own, as the champion predicts a
request (its latency is a request's), and the jobs queued behind it in one call (an error then
sends each back alone, so it is the job's own); jobs of a version it does not hold are skipped
(counted as dropped). Jobs reach it as framed message lists on a pipe the gateway's
event loop writes without ever blocking."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from driftloop.gateway.adapters.shadow import FrameReader, FrameWriter, _answer, lower_priority
from driftloop.shared.events import PredictionBatch


class Doubling:
    """A stand-in shadow: predicts twice each row's x, refuses x < 0; counts its calls."""

    version = "2"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, instances: list[dict[str, Any]]) -> tuple[list[Any], None]:
        self.calls.append(len(instances))
        if any(row["x"] < 0 for row in instances):
            raise ValueError("negative x")
        return [2 * row["x"] for row in instances], None


def job(seq: int, *xs: float, version: str = "2") -> tuple[Any, ...]:
    return ("job", seq, "churn", version, [{"x": x} for x in xs], [f"{seq}-{x}" for x in xs])


def records(done: list[tuple[int, str, str, bytes]]) -> list[tuple[int, PredictionBatch]]:
    out = []
    for seq, model, batch_id, payload in done:
        record = PredictionBatch.model_validate_json(payload)
        assert (model, batch_id) == (record.model, record.batch_id)
        out.append((seq, record))
    return out


def test_the_first_job_is_timed_alone_and_those_queued_behind_it_answered_together() -> None:
    shadow = Doubling()

    done, skipped = _answer([job(1, 1.0), job(2, 2.0, 3.0), job(3, 4.0)], {"churn": shadow})

    assert skipped == []
    assert shadow.calls == [1, 3]  # job 1 alone; jobs 2 and 3 in one call
    assert [(seq, r.ids, r.predictions, r.error) for seq, r in records(done)] == [
        (1, ["1-1.0"], [2.0], None),
        (2, ["2-2.0", "2-3.0"], [4.0, 6.0], None),
        (3, ["3-4.0"], [8.0], None),
    ]
    latencies = [r.latency_ms for _, r in records(done)]
    assert latencies[0] is not None
    assert latencies[0] >= 0
    assert latencies[1:] == [None, None]  # a share of a batch is no request's latency
    assert {(r.route, r.version) for _, r in records(done)} == {("shadow", "2")}


def test_when_the_call_for_many_fails_each_job_is_answered_alone_with_its_own_error() -> None:
    shadow = Doubling()

    done, _ = _answer([job(1, 1.0), job(2, -1.0), job(3, 3.0)], {"churn": shadow})

    assert shadow.calls == [1, 2, 1, 1]  # alone, together (refused), then each alone
    assert [(seq, r.predictions, r.error) for seq, r in records(done)] == [
        (1, [2.0], None),
        (2, [], "ValueError: negative x"),
        (3, [6.0], None),
    ]
    assert all(r.latency_ms is not None for _, r in records(done))


def test_each_model_is_timed_and_batched_on_its_own() -> None:
    churn, fraud = Doubling(), Doubling()
    jobs = [job(1, 1.0), ("job", 2, "fraud", "2", [{"x": 5.0}], ["f"]), job(3, 2.0)]

    done, _ = _answer(jobs, {"churn": churn, "fraud": fraud})

    assert (churn.calls, fraud.calls) == ([1, 1], [1])
    assert sorted((seq, r.model, r.predictions) for seq, r in records(done)) == [
        (1, "churn", [2.0]),
        (2, "fraud", [10.0]),
        (3, "churn", [4.0]),
    ]


def test_jobs_of_a_version_the_worker_does_not_hold_are_skipped() -> None:
    done, skipped = _answer(
        [job(1, 1.0, version="1"), job(2, 1.0, version="2")], {"churn": Doubling()}
    )

    assert [seq for seq, _ in records(done)] == [2]
    assert skipped == [1]


class Waiting(Doubling):
    """A shadow that spends its call waiting (as a starved low-priority process would)."""

    def predict(self, instances: list[dict[str, Any]]) -> tuple[list[Any], None]:
        time.sleep(0.2)
        return super().predict(instances)


def test_a_jobs_latency_is_the_time_the_shadow_computed_not_the_time_it_waited() -> None:
    done, _ = _answer([job(1, 1.0)], {"churn": Waiting()})

    [(_, record)] = records(done)
    assert record.predictions == [2.0]
    assert record.latency_ms < 100  # 200 ms asleep, next to no CPU


# The jobs pipe ----------------------------------------------------------------------------------


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        with contextlib.suppress(OSError):  # closed by the test
            os.close(fd)


async def test_what_the_pipe_cannot_take_waits_and_arrives_whole_and_in_order(
    pipe: tuple[int, int],
) -> None:
    """A worker that reads late: the writer's loop is never blocked, and every message
    arrives once it reads, each frame whole (writes larger than the pipe's buffer)."""
    read, write = pipe
    loop = asyncio.get_running_loop()
    writer = FrameWriter(write, loop)
    big = "x" * 50_000
    sent = [[("job", seq, "churn", "2", [{"x": big}], [str(seq)])] for seq in range(1, 21)]

    started = time.monotonic()
    for messages in sent:
        writer.send(messages)
    assert time.monotonic() - started < 5  # 1 MB into a 64 KB pipe: buffered, not waited for
    assert writer.buffer  # what the pipe could not take yet

    reader = FrameReader(read)
    loop.add_reader(read, reader.on_readable)
    got: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        got += await reader.take(64, timeout=1.0)
    loop.remove_reader(read)
    writer.close()

    assert [m[1] for m in got] == list(range(1, 21))
    assert all(m[4] == [{"x": big}] for m in got)
    assert not writer.buffer


async def test_the_reader_sees_the_end_when_the_writer_is_gone(pipe: tuple[int, int]) -> None:
    read, write = pipe
    loop = asyncio.get_running_loop()
    writer = FrameWriter(write, loop)
    writer.send([("stop",)])
    os.close(write)
    reader = FrameReader(read)
    loop.add_reader(read, reader.on_readable)

    first = await reader.take(64, timeout=5.0)
    for _ in range(5):
        if reader.closed:
            break
        assert await reader.take(64, timeout=1.0) == []

    assert first == [("stop",)]
    assert reader.closed


async def test_a_writer_whose_reader_is_gone_drops_what_it_is_given(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    os.close(read)
    writer = FrameWriter(write, asyncio.get_running_loop())

    writer.send([("job", 1, "churn", "2", [{"x": 1.0}], ["1"])])

    assert writer.broken
    assert not writer.buffer


def _scheduled_as(priority: str) -> tuple[int, int]:
    lower_priority(priority)  # type: ignore[arg-type]
    return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
@pytest.mark.parametrize(
    ("priority", "policy", "niceness"),
    [("idle", "SCHED_IDLE", 0), ("low", "SCHED_OTHER", 10), ("normal", "SCHED_OTHER", 0)],
)
def test_the_worker_takes_the_cpu_priority_it_is_given(
    priority: str, policy: str, niceness: int
) -> None:
    """`DRIFTLOOP_SHADOW_PRIORITY`: idle by default (CPU nobody else wants), nice 10, or as the
    gateway; applied in a process of its own (forked: cheap), as in the worker."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("fork")
    ) as pool:
        scheduler, nice = pool.submit(_scheduled_as, priority).result(timeout=60)
    assert scheduler == getattr(os, policy)
    assert nice == base + niceness
