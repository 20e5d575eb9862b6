"""The deployer's view of live traffic: the monitor's per-version figures, asked over NATS
request-reply (the monitor owns them; the deployer keeps no copy)."""

from __future__ import annotations

import logging
from typing import Any

from driftloop.deployer.domain.rollout import Counters, Observation, Rollout, champion_since
from driftloop.shared.bus import Bus

logger = logging.getLogger(__name__)
VERSION_SUBJECT = "driftloop.rpc.monitor.version"


def counters(route: dict[str, Any] | None) -> Counters:
    if not route:
        return Counters()
    compared = int(route.get("compared") or 0)
    share = route.get("disagreement")
    return Counters(
        rows=int(route.get("rows") or 0),
        errors=int(route.get("errors") or 0),
        compared=compared,
        disagreed=round(float(share) * compared) if share is not None else 0,
    )


def p95(route: dict[str, Any] | None) -> float | None:
    value = ((route or {}).get("latency_ms") or {}).get("p95")
    return float(value) if value is not None else None


def timed(route: dict[str, Any] | None) -> int:
    """The requests the route's latency figures are taken over (a shadow's answered together
    are not timed); a monitor from before `timed` timed every request."""
    route = route or {}
    return int(route.get("timed", route.get("requests")) or 0)


def observation(
    rollout: Rollout, challenger: dict[str, Any], champion: dict[str, Any]
) -> Observation:
    """Both answers of the monitor, read into what the analysis needs."""
    routes = challenger.get("routes") or {}
    stage_route = routes.get(rollout.route or "")
    champion_route = (champion.get("routes") or {}).get("champion")
    mine, theirs = challenger.get("metric") or {}, champion.get("metric") or {}
    return Observation(
        challenger=counters(stage_route),
        challenger_p95_ms=p95(stage_route),
        champion_p95_ms=p95(champion_route),
        challenger_requests=timed(stage_route),
        champion_requests=timed(champion_route),
        metric=str(mine.get("name") or theirs.get("name") or "accuracy"),
        challenger_metric=mine.get("figure"),
        challenger_labels=int(mine.get("labels") or 0),
        champion_metric=theirs.get("figure"),
        champion_labels=int(theirs.get("labels") or 0),
        challenger_metric_se=mine.get("se"),
        champion_metric_se=theirs.get("se"),
        routes={name: counters(route) for name, route in routes.items()},
    )


class MonitorStats:
    def __init__(self, bus: Bus, *, timeout: float = 5.0) -> None:
        self.bus = bus
        self.timeout = timeout

    async def version(self, model: str, version: str, since: Any) -> dict[str, Any]:
        answer = await self.bus.request(
            VERSION_SUBJECT,
            {"model": model, "version": version, "since": since.isoformat()},
            timeout=self.timeout,
        )
        if "error" in answer:
            raise RuntimeError(f"the monitor could not answer: {answer['error']}")
        return answer

    async def observe(self, rollout: Rollout) -> Observation | None:
        """None when there is nothing to observe (no stage route, or no champion)."""
        if rollout.route is None or rollout.previous is None:
            return None
        challenger = await self.version(rollout.model, rollout.version, rollout.stage_started_at)
        champion = await self.version(
            rollout.model, rollout.previous.version, champion_since(rollout)
        )
        return observation(rollout, challenger, champion)
