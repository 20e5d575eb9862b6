"""Model specs for the hot path: the KV bucket read at most once a second per model."""

from __future__ import annotations

import time
from collections.abc import Callable

from driftloop.shared.bus import Bus
from driftloop.shared.service import SpecSource
from driftloop.shared.spec import ModelSpec

SPEC_TTL_SECONDS = 1.0


class CachedSpecSource(SpecSource):
    """A SpecSource that keeps each model's spec for `ttl` seconds: the monitor handles
    hundreds of prediction batches a second and a KV read is a round trip to the server. An
    applied spec takes effect within `ttl`; a model without a spec is asked again each time
    (nothing to watch until one is applied)."""

    def __init__(
        self,
        bus: Bus,
        *,
        ttl: float = SPEC_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(bus)
        self.ttl = ttl
        self.clock = clock
        self._kept: dict[str, tuple[float, ModelSpec]] = {}  # model -> (read at, spec)

    async def get(self, model: str) -> ModelSpec | None:
        kept = self._kept.get(model)
        now = self.clock()
        if kept is not None and now - kept[0] < self.ttl:
            return kept[1]
        spec = await super().get(model)
        if spec is None:
            self._kept.pop(model, None)
        else:
            self._kept[model] = (now, spec)
        return spec
