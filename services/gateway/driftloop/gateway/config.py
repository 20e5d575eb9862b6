"""The gateway's own settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from driftloop.shared.config import Settings

ShadowPriority = Literal["idle", "low", "normal"]
"""The shadow worker's CPU priority (`adapters/shadow.lower_priority`)."""


class GatewaySettings(Settings):
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
