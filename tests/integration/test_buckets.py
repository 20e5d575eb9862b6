"""A KV bucket's keys against a real nats-server: listed from the stream's state, deleted and
purged keys left out; the gateway's routes are ready only once every key the bucket held is
applied, whatever the watcher's own "initial values delivered" marker says."""

from __future__ import annotations

import asyncio

from helpers import eventually

from driftloop.gateway.adapters.models import RouteTable
from driftloop.shared.buckets import live_keys
from driftloop.shared.bus import Bus
from driftloop.shared.events import ROUTES_BUCKET, SPECS_BUCKET
from driftloop.shared.routes import Routes


async def test_live_keys_are_every_key_holding_a_value(bus: Bus) -> None:
    kv = await bus.kv(SPECS_BUCKET)
    assert await live_keys(bus.js, kv, SPECS_BUCKET) == []

    for key in ("churn", "fraud", "old", "gone"):
        await kv.put(key, b"{}")
    await kv.put("churn", b'{"again": 1}')  # a second revision lists the key once
    await kv.delete("old")
    await kv.purge("gone")

    assert await live_keys(bus.js, kv, SPECS_BUCKET) == ["churn", "fraud"]
    await kv.put("old", b"{}")  # put again after its delete: live again
    assert await live_keys(bus.js, kv, SPECS_BUCKET) == ["churn", "fraud", "old"]


async def test_routes_are_ready_only_once_every_initial_key_is_applied(bus: Bus) -> None:
    kv = await bus.kv(ROUTES_BUCKET)
    await kv.put("a", Routes(model="a").to_json())
    table = RouteTable()
    # "b" stands for a key the bucket held whose entry the watcher has not yet received: the
    # watcher's marker arrives after "a" alone, and the table must not call itself ready
    watch = asyncio.create_task(table.watch_routes(kv, ["a", "b"]))
    try:
        await eventually(lambda: "a" in table.serving)
        await asyncio.sleep(0.3)  # the marker, had it counted, would have set `ready` by now
        assert not table.ready.is_set()

        await kv.put("b", Routes(model="b").to_json())
        await asyncio.wait_for(table.ready.wait(), timeout=10)
        assert set(table.serving) == {"a", "b"}
    finally:
        watch.cancel()


async def test_routes_of_an_empty_bucket_are_ready_at_once(bus: Bus) -> None:
    kv = await bus.kv(ROUTES_BUCKET)
    assert await live_keys(bus.js, kv, ROUTES_BUCKET) == []
    table = RouteTable()
    watch = asyncio.create_task(table.watch_routes(kv, []))
    try:
        await asyncio.wait_for(table.ready.wait(), timeout=10)
    finally:
        watch.cancel()
