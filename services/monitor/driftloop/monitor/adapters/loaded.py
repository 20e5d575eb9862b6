"""What one transaction of prediction records reads and changes of the monitor's per-model
state, read once and written once.

A record changes its model's row (rows seen, the open window, episodes ...) and its version's
live stats. Read, parsed, serialised and written for every record, those two rows were most of
the monitor's CPU per one-row record (py-spy, issue 19); a fetch of records handled whole
(`handlers.on_all_predictions`) now reads each once, changes it in memory record by record,
in order, and writes it at the end, inside the same transaction: every record sees what the
ones before it did, exactly as when each was handled alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from driftloop.monitor.adapters.store import (
    load_label_window,
    load_state,
    load_stats,
    save,
    save_label_window,
    save_stats,
)
from driftloop.monitor.domain.drift import Window
from driftloop.monitor.domain.live import VersionStats

StatsKey = tuple[str, str, str]  # model, version, route


def stored_window(window: Window) -> dict[str, Any]:
    """The window's row: everything but the reservoir segments (kept in their own rows)."""
    stored: dict[str, Any] = window.model_dump(
        mode="json", exclude={"samples": True, "prediction": {"samples"}}
    )
    return stored


def _without_samples(window: Window) -> Window:
    """The window as a row holds it: without reservoir segments, so that the next record's
    `add_batch` gives only its own segments to append (a window compacted or added to in
    memory holds them)."""
    prediction = window.prediction
    if prediction is not None and prediction.samples:
        prediction = prediction.model_copy(update={"samples": {}})
    if not window.samples and prediction is window.prediction:
        return window
    return window.model_copy(update={"samples": {}, "prediction": prediction})


class Loaded:
    """Model rows, their open windows and version stats of one transaction (`conn`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._states: dict[str, dict[str, Any] | None] = {}
        self._changed: dict[str, dict[str, Any]] = {}
        self._windows: dict[str, Window] = {}
        self._stats: dict[StatsKey, VersionStats] = {}
        self._stats_changed: set[StatsKey] = set()

    def state(self, model: str) -> dict[str, Any] | None:
        """The model's row as the records before have left it (None: the model has none)."""
        if model not in self._states:
            self._states[model] = load_state(self.conn, model)
        return self._states[model]

    def window(self, model: str) -> Window:
        """The model's open champion window (its row must exist)."""
        if model not in self._windows:
            state = self.state(model)
            self._windows[model] = Window.model_validate((state or {}).get("window") or {})
        return self._windows[model]

    def save(self, model: str, *, window: Window | None = None, **values: Any) -> None:
        """Change columns of the model's row (and its open window), written at `flush`."""
        state = self.state(model)
        if state is not None:
            state.update(values)
        else:
            self._states[model] = dict(values)
        self._changed.setdefault(model, {}).update(values)
        if window is not None:  # as stored: its segments are in their own rows already
            self._windows[model] = _without_samples(window)
            self._changed[model]["window"] = None  # serialised at flush

    def stats(self, model: str, version: str, route: str) -> VersionStats:
        key = (model, version, route)
        if key not in self._stats:
            found = load_stats(self.conn, model, version, route)
            self._stats[key] = (
                VersionStats.model_validate(found["stats"]) if found else VersionStats()
            )
        return self._stats[key]

    def put_stats(self, model: str, version: str, route: str, stats: VersionStats) -> None:
        key = (model, version, route)
        self._stats[key] = stats
        self._stats_changed.add(key)

    def flush(self, *, at: datetime) -> None:
        """Write what changed (each row once); `at`: the stats' update time."""
        for model, values in self._changed.items():
            if "window" in values:
                values = values | {"window": stored_window(self._windows[model])}
            save(self.conn, model, **values)
        for key in self._stats_changed:
            save_stats(self.conn, *key, self._stats[key].model_dump(mode="json"), at)
        self._changed.clear()
        self._stats_changed.clear()


class LabelWindows:
    """The models' label windows of one transaction of label records (`conn`), read once
    and written once, as `Loaded` does for the model rows."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._windows: dict[str, Window] = {}
        self._changed: dict[str, dict[str, Any]] = {}

    def get(self, model: str) -> Window:
        """The model's open label window as the records before have left it."""
        if model not in self._windows:
            row = load_label_window(self.conn, model) or {}
            self._windows[model] = Window.model_validate(row.get("window") or {})
        return self._windows[model]

    def put(self, model: str, window: Window, **values: Any) -> None:
        """The model's label window is now `window` (with other columns of its row, such as
        a judged window's `last_drift`), written at `flush`."""
        self._windows[model] = window
        self._changed.setdefault(model, {}).update(values)

    def flush(self) -> None:
        for model, values in self._changed.items():
            window = self._windows[model].model_dump(mode="json")
            save_label_window(self.conn, model, window=window, **values)
        self._changed.clear()
