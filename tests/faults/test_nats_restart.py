"""Issue 8, item 2: nats-server restarted mid-traffic and mid-cycle. The gateway keeps
answering from its loaded champion, prediction records made during the outage arrive after it,
a label is either stored by JetStream (202) or refused (503), every service reconnects and
resumes its durable consumers, and the cycle completes. The server comes back with the users
and permissions `driftloop up` configured (a connection without a user is still refused)."""

from __future__ import annotations

import httpx
import pytest
from faults.harness import CYCLE, ENOUGH_LABELS, Loop, assert_exactly_once, model_versions

pytestmark = pytest.mark.faults


async def test_a_nats_restart_mid_cycle_and_mid_traffic_loses_nothing(loop: Loop) -> None:
    async with httpx.AsyncClient(base_url=loop.gateway, timeout=30) as http:
        await loop.traffic(http, ENOUGH_LABELS)
        versions = model_versions(loop)
        cycle_id = await loop.retrain()
        await loop.seen(cycle_id, "ModelTrained")

        loop.stop_nats()
        during = [await loop.predict_once(http) for _ in range(8)]
        labelled = await loop.traffic(http, 1)  # its feedback: 202 after the restart, or 503
        loop.start_nats()
        refusal = await loop.anonymous_refusal()
        after = await loop.traffic(http, 3)

    assert refusal is not None, "nats-server came back without its users: auth is off"
    assert "authorization violation" in refusal.lower()
    assert set(during + labelled + after) == {200}
    for name in ("monitor", "trainer", "evaluator", "deployer"):
        await loop.restarted(name, killed=-1)  # answers on the bus again
    assert await loop.ended(cycle_id) == CYCLE
    await assert_exactly_once(loop, cycle_id, versions)  # and the gateway follows the routes
    await loop.stored_everything()
