"""The gateway's own settings."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from driftloop.shared.config import Settings

ShadowPriority = Literal["idle", "low", "normal"]
"""The shadow worker's CPU priority (`adapters/shadow.lower_priority`)."""


class GatewaySettings(Settings):
    gateway_workers: int = Field(
        default=1,
        ge=0,
        le=64,
        description=(
            "gateway worker processes serving the one host:port (SO_REUSEPORT; each with its "
            "own record spool and shadow worker; metrics summed over them): 1 is a single "
            "process as before, 0 one per core. More than the cores left beside the model's "
            "other services only adds contention (docs/benchmarks.md, issue 19 goal 2)"
        ),
    )
    shadow_capacity: int = Field(
        default=256,
        ge=1,
        description="mirror jobs in flight to the shadow's worker process; more are dropped",
    )
    shadow_priority: ShadowPriority = Field(
        default="idle",
        description=(
            "CPU priority of the shadow's worker process: idle (Linux SCHED_IDLE: only CPU "
            "nobody else wants; on a saturated machine the shadow answers nothing and its "
            "stage waits), low (nice 10: a small share even then) or normal"
        ),
    )
    record_spool_capacity: int = Field(
        default=100_000,
        ge=1,
        description=(
            "prediction records kept on disk until JetStream acknowledges them (a few hundred "
            "bytes each); when full, predict answers 503 rather than lose a record"
        ),
    )
    batch_max_rows: int = Field(
        default=32,
        ge=0,
        description=(
            "adaptive batching: concurrent requests for the same model version are predicted "
            "in one call of at most this many rows (a bigger request is predicted alone); "
            "0 or 1 turns batching off (every request predicted alone, at once)"
        ),
    )
    batch_max_wait_ms: float = Field(
        default=2.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "the longest a batch's first request waits for requests already received to join "
            "it (it stops sooner once a few event-loop turns add none, so a lone request does "
            "not wait); 0: no waiting, a batch is what queued in the same event-loop turn"
        ),
    )

    compiled_trees: bool = Field(
        default=True,
        description=(
            "predict RandomForest, ExtraTrees and HistGradientBoosting classifiers with "
            "treelite's GTIL (one C++ call for every tree: 30-60x faster than scikit-learn's "
            "predict for a forest) once they give scikit-learn's own answers on probe rows "
            "built from their split thresholds; false: always scikit-learn's predict"
        ),
    )

    def worker_count(self) -> int:
        """DRIFTLOOP_GATEWAY_WORKERS, 0 resolved to the number of cores."""
        return self.gateway_workers or os.cpu_count() or 1
