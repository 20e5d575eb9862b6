"""The routing table of a model in the `driftloop_routes` KV bucket: written only by the
deployer, watched by every gateway."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Served(BaseModel):
    model_config = ConfigDict(frozen=True)
    version: str
    run_id: str


class CanaryRoute(Served):
    weight: int = Field(ge=0, le=100, description="share of requests (percent) the canary gets")


class Routes(BaseModel):
    model_config = ConfigDict(frozen=True)
    model: str
    champion: Served | None = None
    canary: CanaryRoute | None = None
    shadow: Served | None = None
    revision: int = 0
    rollout: dict[str, Any] | None = None
    updated_at: datetime | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()
