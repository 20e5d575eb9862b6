"""The metric families built from stored rows: a histogram's buckets as prometheus_client's
own Histogram would expose them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftloop.shared.metrics import as_float, histogram

BUCKETS = (1.0, 10.0, 100.0)


def exposed(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if not s.name.endswith("_created")
    }


def test_a_histogram_of_stored_durations_is_the_one_prometheus_client_would_expose() -> None:
    durations = [0.5, 1.0, 7.0, 99.0, 250.0]
    own = CollectorRegistry()
    observed = Histogram("d_seconds", "d", ["model"], buckets=BUCKETS, registry=own)
    for seconds in durations:
        observed.labels("churn").observe(seconds)

    class Stored:
        def collect(self) -> list[object]:
            return [
                histogram("d_seconds", "d", ["model"], {("churn",): durations}, buckets=BUCKETS)
            ]

    built = CollectorRegistry()
    built.register(Stored())  # type: ignore[arg-type]  # a collector needs only collect()

    assert exposed(built) == exposed(own)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [(0.25, 0.25), (3, 3.0), (None, None), ("0.3", None), (True, None)],
    ids=["float", "int", "absent", "text", "bool"],
)
def test_only_stored_numbers_become_values(stored: object, expected: float | None) -> None:
    assert as_float(stored) == expected
