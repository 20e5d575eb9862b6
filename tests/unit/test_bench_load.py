"""The load benchmark's arithmetic (bench/load.py): what it calls lost, flat and the cycle."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load.py"


@pytest.fixture(scope="module")
def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def version(routes: dict[str, tuple[int, int]]) -> dict[str, Any]:
    return {"routes": {r: {"rows": rows, "errors": errors} for r, (rows, errors) in routes.items()}}


def test_counted_rows_leave_out_the_shadow_and_failed_rows(load: ModuleType) -> None:
    answers = [
        version({"champion": (1000, 3), "shadow": (300, 0)}),
        version({"canary": (150, 0), "shadow": (50, 50)}),
        {"routes": {}},
    ]

    assert load.counted_rows(answers) == 997 + 150


@pytest.mark.parametrize(
    ("accepted", "before", "after", "lost"),
    [(500, 100, 600, 0), (500, 100, 590, 10), (500, 100, 605, -5)],
    ids=["all counted", "ten missing", "more counted than answered"],
)
def test_records_lost_is_accepted_minus_counted_since_the_snapshot(
    load: ModuleType, accepted: int, before: int, after: int, lost: int
) -> None:
    assert load.records_lost(accepted, before, after) == lost


def test_status_classes_group_codes_by_their_first_digit(load: ModuleType) -> None:
    assert load.status_classes({"200": 7, "202": 1, "422": 2, "503": 4, "500": 1}) == {
        "2xx": 8,
        "3xx": 0,
        "4xx": 2,
        "5xx": 5,
    }


def sample(t: float, **rss: tuple[int, int, int]) -> dict[str, Any]:
    return {
        "t": t,
        "rss": {
            n: {"pid": pid, "kib": kib, "children_kib": kids} for n, (pid, kib, kids) in rss.items()
        },
    }


def test_rss_summary_counts_children_growth_and_restarts(load: ModuleType) -> None:
    samples = [
        sample(0, gateway=(10, 102400, 0), trainer=(20, 51200, 0)),
        sample(60, gateway=(10, 104448, 0), trainer=(21, 51200, 10240)),
        sample(120, gateway=(10, 204800, 0), trainer=(21, 51200, 0)),
    ]

    summary = load.rss_summary(samples)

    assert summary["gateway"]["start_mib"] == 100.0
    assert summary["gateway"]["end_mib"] == 200.0
    assert summary["gateway"]["growth_pct"] == 100.0
    assert summary["gateway"]["flat"] is False
    assert summary["trainer"]["peak_mib"] == 60.0
    assert summary["trainer"]["restarts"] == 1
    assert summary["trainer"]["flat"] is True


def test_cycle_timeline_keeps_one_cycle_in_seconds_since_the_start_with_failed_checks(
    load: ModuleType,
) -> None:
    started = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    log = [
        {"type": "RetrainRequested", "time": "2026-01-01T12:01:00Z", "data": {"cycle_id": "a"}},
        {"type": "DriftDetected", "time": "2026-01-01T12:01:01Z", "data": {}},
        {"type": "ModelTrained", "time": "2026-01-01T12:01:30+00:00", "data": {"cycle_id": "b"}},
        {
            "type": "RolledBack",
            "time": "2026-01-01T12:02:00Z",
            "data": {
                "cycle_id": "a",
                "checks": [
                    {"name": "error_rate", "passed": True, "detail": "0 of 300 rows failed"},
                    {"name": "latency_p95_ratio", "passed": False, "detail": "p95 9 ms vs 3 ms"},
                ],
            },
        },
        {
            "type": "Deployed",
            "time": "2026-01-01T12:03:00.500000+00:00",
            "data": {"cycle_id": "a", "version": "2"},
        },
    ]

    timeline = load.cycle_timeline(log, "a", started)

    assert timeline == [
        {"type": "RetrainRequested", "at_s": 60.0},
        {"type": "RolledBack", "at_s": 120.0, "failed": ["p95 9 ms vs 3 ms"]},
        {"type": "Deployed", "at_s": 180.5, "version": "2"},
    ]
    assert load.terminal_of(timeline) == "Deployed"


def test_the_cycle_id_is_read_from_what_retrain_prints(load: ModuleType) -> None:
    printed = "cycle 0b7c6c1e-58a4-4bd8-9d38-1a2b3c4d5e6f started (manual) for churn\n"

    assert load.cycle_id_from(printed) == "0b7c6c1e-58a4-4bd8-9d38-1a2b3c4d5e6f"
    assert load.cycle_id_from("error: unknown model") is None


def figures_of(*, sent: int, duration: float, p99: float, ended: str | None) -> dict[str, Any]:
    flat = {"flat": True}
    return {
        "load": {"statuses": {"200": sent}, "sent": sent, "duration_s": duration, "p99_ms": p99},
        "lost": dict.fromkeys(
            (
                "records_live_stats",
                "records_monitor_samples",
                "records_trainer_samples",
                "labels_monitor",
                "labels_trainer",
            ),
            0,
        ),
        "rss": {"gateway": flat},
        "cycle": {"ended": ended},
    }


def test_issue_19_goals_are_the_rate_the_p99_from_due_and_a_deployed_cycle(
    load: ModuleType,
) -> None:
    met = {
        g: ok
        for g, _, ok in load.goals(
            figures_of(sent=600_000, duration=600, p99=80.0, ended="Deployed")
        )
    }
    assert all(met.values())

    missed = {
        g: ok
        for g, _, ok in load.goals(
            figures_of(sent=480_000, duration=600, p99=140.0, ended="RolledBack")
        )
    }
    assert not missed["rate >= 1,000 req/s"]
    assert not missed["p99 from due < 100 ms"]
    assert not missed["the cycle Deployed"]
    assert missed["the cycle ends under load (Deployed, RolledBack, ...)"]


def test_the_bench_spec_keeps_every_answer_it_counts_as_stored(load: ModuleType) -> None:
    from driftloop.shared.spec import parse_spec

    spec = parse_spec(load.bench_spec())

    assert spec.monitor.keep_samples >= 10 * 3600 * 1000  # ten hours at 1,000 req/s
    assert spec.monitor.window == 500  # the rest of the demo's monitor as it was
    assert spec.deployer.canary.max_metric_drop == 0.05
    assert spec.evaluator.non_inferiority == 0.05


def test_nats_is_judged_flat_by_its_level_after_the_warm_up(load: ModuleType) -> None:
    # rises in its first minutes, then a sawtooth around one level (as session 19's 30 minutes)
    level = [101, 109, 130, 148, 120, 136, 150, 145, 143, 148, 132, 144, 147, 129, 139, 158]
    rising = [100 + 8 * m for m in range(len(level))]  # a leak: 8 MiB a minute, all along
    samples = [
        sample(60 * m, nats=(1, a * 1024, 0), gateway=(2, b * 1024, 0))
        for m, (a, b) in enumerate(zip(level, rising, strict=True))
    ]

    rss = load.rss_summary(samples)

    assert rss["nats"]["flat"] is False  # start -> end it grew
    assert rss["nats"]["settled"] is True
    assert rss["gateway"]["settled"] is False  # a steady rise is no warm-up
    assert rss_goal(load, rss) == ("grew: gateway", False)


def test_a_nats_rising_after_its_warm_up_is_not_flat(load: ModuleType) -> None:
    samples = [sample(60 * m, nats=(1, (100 + 6 * m) * 1024, 0)) for m in range(12)]

    rss = load.rss_summary(samples)

    assert rss["nats"]["settled"] is False
    assert rss_goal(load, rss) == ("grew: nats", False)


def rss_goal(load: ModuleType, rss: dict[str, Any]) -> tuple[str, bool]:
    figures = figures_of(sent=600_000, duration=600, p99=50.0, ended="Deployed") | {"rss": rss}
    return next((m, ok) for g, m, ok in load.goals(figures) if g.startswith("RSS flat"))
