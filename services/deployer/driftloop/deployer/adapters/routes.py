"""Where a release takes effect: the MLflow `champion` alias and the KV routing table; and
where it ends, the `challenger` alias let go of."""

from __future__ import annotations

import asyncio

from mlflow import MlflowClient
from nats.js.errors import KeyNotFoundError, NotFoundError

from driftloop.shared.bus import Bus
from driftloop.shared.events import ROUTES_BUCKET
from driftloop.shared.registry import CHALLENGER, CHAMPION, release_alias
from driftloop.shared.routes import Routes


class RouteWriter:
    def __init__(self, bus: Bus, client: MlflowClient) -> None:
        self.bus = bus
        self.client = client

    async def current(self, model: str) -> Routes | None:
        kv = await self.bus.kv(ROUTES_BUCKET)
        try:
            entry = await kv.get(model)
        except (KeyNotFoundError, NotFoundError):
            return None
        return Routes.model_validate_json(entry.value) if entry.value else None

    async def apply(self, routes: Routes) -> None:
        """Move the alias first, then the routes: both are idempotent, so a crash between
        them is mended by the redelivery that repeats the pair."""
        if routes.champion is not None:
            await asyncio.to_thread(
                self.client.set_registered_model_alias,
                routes.model,
                CHAMPION,
                routes.champion.version,
            )
        kv = await self.bus.kv(ROUTES_BUCKET)
        await kv.put(routes.model, routes.to_json())

    async def release_challenger(self, model: str, version: str) -> None:
        """The version's rollout is over (promoted or rolled back): it is no longer the
        challenger. The alias is deleted only while it still points at `version`: a newer
        cycle's challenger keeps it. Idempotent, so it goes before the state commits, as the
        routes do."""
        await asyncio.to_thread(release_alias, self.client, model, CHALLENGER, version)
