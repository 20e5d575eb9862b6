"""The gateway's own settings."""

from __future__ import annotations

from pydantic import Field

from driftloop.shared.config import Settings


class GatewaySettings(Settings):
    shadow_capacity: int = Field(
        default=256,
        ge=1,
        description="mirror jobs in flight to the shadow's worker process; more are dropped",
    )
