"""A consumer created on an existing stream is handed every past verdict: only a version newer
than the champion gets a window of its own."""

from __future__ import annotations

import pytest

from driftloop.monitor.handlers import _superseded


@pytest.mark.parametrize(
    ("version", "champion", "superseded"),
    [
        ("1", "2", True),
        ("2", "2", True),
        ("10", "9", False),  # compared as numbers, not text
        ("3", None, False),  # no champion yet
        ("b", "b", True),
        ("c", "b", False),  # not MLflow's numbers: only the champion itself is skipped
    ],
    ids=["older", "the-champion", "newer-by-number", "no-champion", "named-same", "named-other"],
)
def test_only_a_version_newer_than_the_champion_gets_a_window(
    version: str, champion: str | None, superseded: bool
) -> None:
    assert _superseded(version, champion) is superseded
