"""The store's settings: a busy timeout that keeps heartbeats going, an inbox retention longer
than any redelivery, record fetches within the consumers' bounds; bad values are refused
naming the variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from driftloop.shared.config import Settings


def test_defaults_keep_a_week_of_inbox_and_wait_five_seconds_for_a_lock() -> None:
    settings = Settings(home=Path("/tmp/driftloop-unit"))

    assert timedelta(days=settings.inbox_retention_days) == timedelta(days=7)
    assert settings.sqlite_busy_timeout == 5.0


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("DRIFTLOOP_INBOX_RETENTION_DAYS", "0.5", "DRIFTLOOP_INBOX_RETENTION_DAYS"),
        ("DRIFTLOOP_SQLITE_BUSY_TIMEOUT", "60", "sqlite_busy_timeout"),
        ("DRIFTLOOP_SQLITE_BUSY_TIMEOUT", "0", "sqlite_busy_timeout"),
        # beyond the record consumers' max_ack_pending (1000)
        ("DRIFTLOOP_RECORD_FETCH", "5000", "record_fetch"),
        ("DRIFTLOOP_RECORD_LINGER", "-1", "record_linger"),
    ],
    ids=[
        "retention-under-a-day",
        "busy-timeout-past-heartbeats",
        "busy-timeout-zero",
        "record-fetch-past-ack-pending",
        "record-linger-negative",
    ],
)
def test_bad_store_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError, match=named):
        Settings()
