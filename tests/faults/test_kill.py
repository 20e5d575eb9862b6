"""Issue 8, item 1: any service killed with SIGKILL at any point of a cycle loses nothing and
repeats no effect; the cycle completes after the supervisor restarts it."""

from __future__ import annotations

import httpx
import pytest
from faults.harness import CYCLE, ENOUGH_LABELS, Loop, assert_exactly_once, model_versions
from helpers import eventually

pytestmark = pytest.mark.faults


async def test_monitor_killed_mid_traffic_loses_no_record(loop: Loop) -> None:
    async with httpx.AsyncClient(base_url=loop.gateway, timeout=30) as http:
        before = await loop.traffic(http, 4)
        killed = loop.kill("monitor")
        during = await loop.traffic(http, 6)
        await loop.restarted("monitor", killed)
        after = await loop.traffic(http, 2)

    assert set(before + during + after) == {200}
    await loop.stored_everything()


async def test_gateway_killed_with_records_waiting_for_the_bus_loses_none(loop: Loop) -> None:
    async with httpx.AsyncClient(base_url=loop.gateway, timeout=30) as http:
        await loop.traffic(http, 2)
        await loop.stored_everything()
        loop.freeze_nats()  # records cannot leave the gateway; predictions still answer
        try:
            answered = [await loop.predict_once(http) for _ in range(4)]
            killed = loop.kill("gateway")
        finally:
            loop.thaw_nats()
        await loop.restarted("gateway", killed)

    assert answered == [200] * 4
    try:
        await loop.stored_everything(timeout=20)
    finally:
        await loop.rebase()  # the other tests count from what was stored, whatever happened here


async def test_trainer_killed_mid_traffic_loses_no_record(loop: Loop) -> None:
    async with httpx.AsyncClient(base_url=loop.gateway, timeout=30) as http:
        before = await loop.traffic(http, 3)
        killed = loop.kill("trainer")
        during = await loop.traffic(http, 3)
        await loop.restarted("trainer", killed)

    assert set(before + during) == {200}
    await loop.stored_everything()


async def test_cycle_completes_once_with_services_killed_before_commit_and_after_publish(
    loop: Loop,
) -> None:
    """Each service is killed twice in one cycle: before its handler commits (the trainer
    while it holds RetrainRequested, the evaluator as ModelTrained arrives, the deployer as
    EvaluationPassed arrives, the monitor as the cycle opens) and after it published (before
    or just after its ack: the redelivered input is a repeat and must change nothing)."""
    async with httpx.AsyncClient(base_url=loop.gateway, timeout=30) as http:
        await loop.traffic(http, ENOUGH_LABELS)
    versions = model_versions(loop)
    delivered = await loop.delivered("trainer-RetrainRequested")
    killed: list[tuple[str, int]] = []

    cycle_id = await loop.retrain()
    killed.append(("monitor", loop.kill("monitor")))

    async def training() -> bool:
        return await loop.delivered("trainer-RetrainRequested") > delivered

    await eventually(training, timeout=30, interval=0.05)
    killed.append(("trainer", loop.kill("trainer")))
    await loop.seen(cycle_id, "ModelTrained")
    killed += [("trainer", loop.kill("trainer")), ("evaluator", loop.kill("evaluator"))]
    await loop.seen(cycle_id, "EvaluationPassed")
    killed += [("evaluator", loop.kill("evaluator")), ("deployer", loop.kill("deployer"))]
    await loop.seen(cycle_id, "Deployed")
    # the deployer after its publish; the monitor as it takes the new reference on Deployed
    killed += [("deployer", loop.kill("deployer")), ("monitor", loop.kill("monitor"))]
    for name, pid in killed:
        await loop.restarted(name, pid)

    assert await loop.ended(cycle_id) == CYCLE
    await assert_exactly_once(loop, cycle_id, versions)
    assert (await loop.monitor_status())["open_cycle_id"] is None
    await loop.stored_everything()


async def test_cycle_completes_once_with_services_killed_between_commit_and_publish(
    loop: Loop,
) -> None:
    """The bus is frozen (SIGSTOP) while the trainer trains: the handler commits, its outbox
    relay cannot publish, and the trainer is killed with ModelTrained only in its outbox. The
    restarted trainer must publish it, and the redelivered RetrainRequested must not train
    again. (The evaluator's and deployer's handlers are too short to freeze the bus reliably
    between their spec read and their commit from outside.)"""
    async with httpx.AsyncClient(base_url=loop.gateway, timeout=30) as http:
        await loop.traffic(http, ENOUGH_LABELS)
    versions = model_versions(loop)

    trainer = await loop.delivered("trainer-RetrainRequested")

    cycle_id = await loop.retrain()
    await kill_with_event_in_outbox(
        loop, "trainer", "RetrainRequested", "ModelTrained", trainer, cycle_id=cycle_id
    )

    assert await loop.ended(cycle_id) == CYCLE
    await assert_exactly_once(loop, cycle_id, versions)


async def kill_with_event_in_outbox(
    loop: Loop, service: str, consumed: str, produced: str, delivered: int, *, cycle_id: str
) -> None:
    """Once `service` received `consumed` (its consumer delivered more than `delivered`) and
    read what it needs from the bus (the spec, at the handler's start: it then logs "training
    started"), freeze the bus; wait for the handler to commit `produced` to its outbox, which
    it cannot publish; kill it."""

    async def handling() -> bool:
        return await loop.delivered(f"{service}-{consumed}") > delivered

    await eventually(handling, timeout=60, interval=0.05)
    await eventually(
        lambda: loop.logged(service, "training started", cycle_id=cycle_id),
        timeout=60,
        interval=0.05,
    )
    loop.freeze_nats()
    try:

        async def committed() -> bool:
            return loop.unpublished(service, produced) > 0

        await eventually(committed, timeout=60, interval=0.1)
        killed = loop.kill(service)
    finally:
        loop.thaw_nats()
    await loop.restarted(service, killed)
