"""The shadow worker predicts each queued job on its own, as the champion predicts a request
(so its latency is a request's and an error is the job's own), and sends the records back in
one message; jobs of a version it does not hold are skipped (counted as dropped)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest

from driftloop.gateway.adapters.shadow import _answer
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


@pytest.fixture
def pipe() -> Iterator[tuple[Connection, Connection]]:
    receive, send = multiprocessing.Pipe(duplex=False)
    yield receive, send
    receive.close()
    send.close()


def job(seq: int, *xs: float, version: str = "2") -> tuple[Any, ...]:
    return ("job", seq, "churn", version, [{"x": x} for x in xs], [f"{seq}-{x}" for x in xs])


def records(done: list[tuple[int, str, bytes]]) -> list[tuple[int, PredictionBatch]]:
    return [(seq, PredictionBatch.model_validate_json(payload)) for seq, _, payload in done]


def answers(receive: Connection) -> list[Any]:
    out = []
    while receive.poll():
        out.append(receive.recv())
    return out


def test_queued_jobs_are_predicted_one_by_one_and_sent_back_together(
    pipe: tuple[Connection, Connection],
) -> None:
    receive, send = pipe
    shadow = Doubling()

    _answer([job(1, 1.0), job(2, 2.0, 3.0), job(3, 4.0)], {"churn": shadow}, send)

    [(kind, done)] = answers(receive)
    assert kind == "done"
    assert shadow.calls == [1, 2, 1]
    assert [(seq, r.ids, r.predictions, r.error) for seq, r in records(done)] == [
        (1, ["1-1.0"], [2.0], None),
        (2, ["2-2.0", "2-3.0"], [4.0, 6.0], None),
        (3, ["3-4.0"], [8.0], None),
    ]
    assert {(r.route, r.version) for _, r in records(done)} == {("shadow", "2")}


def test_a_failing_job_records_its_own_error_and_the_others_their_answers(
    pipe: tuple[Connection, Connection],
) -> None:
    receive, send = pipe
    shadow = Doubling()

    _answer([job(1, 1.0), job(2, -1.0), job(3, 3.0)], {"churn": shadow}, send)

    [(_, done)] = answers(receive)
    assert shadow.calls == [1, 1, 1]
    assert [(seq, r.predictions, r.error) for seq, r in records(done)] == [
        (1, [2.0], None),
        (2, [], "ValueError: negative x"),
        (3, [6.0], None),
    ]


def test_jobs_of_a_version_the_worker_does_not_hold_are_skipped(
    pipe: tuple[Connection, Connection],
) -> None:
    receive, send = pipe

    _answer([job(1, 1.0, version="1"), job(2, 1.0, version="2")], {"churn": Doubling()}, send)

    [(first, done), (second, skipped)] = answers(receive)
    assert (first, second) == ("done", "skipped")
    assert [seq for seq, _ in records(done)] == [2]
    assert skipped == [1]


class Waiting(Doubling):
    """A shadow that spends its call waiting (as a starved low-priority process would)."""

    def predict(self, instances: list[dict[str, Any]]) -> tuple[list[Any], None]:
        time.sleep(0.2)
        return super().predict(instances)


def test_a_jobs_latency_is_the_time_the_shadow_computed_not_the_time_it_waited(
    pipe: tuple[Connection, Connection],
) -> None:
    receive, send = pipe

    _answer([job(1, 1.0)], {"churn": Waiting()}, send)

    [(_, done)] = answers(receive)
    [(_, record)] = records(done)
    assert record.predictions == [2.0]
    assert record.latency_ms < 100  # 200 ms asleep, next to no CPU
