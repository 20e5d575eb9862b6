"""The evaluator's Prometheus metrics, read from its verdicts table at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client.core import Metric
from sqlalchemy.engine import Connection, Engine

from driftloop.evaluator.adapters.store import verdicts
from driftloop.shared.metrics import StoreCollector, counter

_VERDICTS = (
    sa.select(verdicts.c.model, verdicts.c.passed, sa.func.count().label("n"))
    .group_by(verdicts.c.model, verdicts.c.passed)
    .order_by(verdicts.c.model, verdicts.c.passed)
)


def evaluator_collector(engine: Engine) -> StoreCollector:
    """The collector to register on the evaluator's bus registry."""
    return StoreCollector(engine, _read)


def _read(conn: Connection) -> Iterator[Metric]:
    family = counter(
        "driftloop_evaluations",
        "challengers judged, by verdict (passed, failed)",
        ["model", "verdict"],
    )
    for row in conn.execute(_VERDICTS):
        family.add_metric([row.model, "passed" if row.passed else "failed"], float(row.n))
    yield family
