"""Prediction ids: UUID version 7, ordered by the millisecond they were made."""

from __future__ import annotations

import time
import uuid

from driftloop.shared.db import ordered_id


def test_ids_are_uuid7_and_sort_by_time() -> None:
    first = ordered_id()
    time.sleep(0.002)
    later = [ordered_id() for _ in range(100)]

    assert uuid.UUID(first).version == 7
    assert uuid.UUID(first).variant == uuid.RFC_4122
    assert all(first < other for other in later)
    assert len(set(later)) == 100
    stamp_ms = uuid.UUID(first).int >> 80
    assert abs(stamp_ms - time.time_ns() // 1_000_000) < 5_000
