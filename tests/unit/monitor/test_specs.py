"""The monitor's spec cache: at most one KV read per model per `ttl`, a new spec seen after it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from driftloop.monitor.adapters.specs import CachedSpecSource
from driftloop.shared.spec import parse_spec

V1 = parse_spec("model: m\ntarget: y\nmonitor: {window: 100}\n")
V2 = parse_spec("model: m\ntarget: y\nmonitor: {window: 200}\n")


@dataclass
class Entry:
    value: bytes | None


@dataclass
class Bucket:
    """The part of a KV bucket SpecSource reads, counting reads."""

    specs: dict[str, bytes] = field(default_factory=dict)
    reads: int = 0

    async def get(self, key: str) -> Entry:
        self.reads += 1
        return Entry(self.specs.get(key))


@dataclass
class Bus:
    bucket: Bucket

    async def kv(self, _name: str) -> Bucket:
        return self.bucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_spec_is_read_once_per_ttl_and_a_new_one_is_seen_after_it() -> None:
    bucket = Bucket({"m": V1.to_json()})
    clock = Clock()
    bus: Any = Bus(bucket)  # the bucket's read is all SpecSource uses
    specs = CachedSpecSource(bus, ttl=1.0, clock=clock)

    first = [await specs.get("m") for _ in range(50)]
    bucket.specs["m"] = V2.to_json()
    clock.now += 0.5
    within = await specs.get("m")
    clock.now += 0.6
    after = await specs.get("m")

    assert first == [V1] * 50
    assert within == V1
    assert after == V2
    assert bucket.reads == 2


async def test_a_model_without_spec_is_asked_again_each_time() -> None:
    bucket = Bucket()
    bus: Any = Bus(bucket)
    specs = CachedSpecSource(bus, ttl=1.0, clock=Clock())

    assert await specs.get("m") is None
    bucket.specs["m"] = V1.to_json()

    assert await specs.get("m") == V1
    assert bucket.reads == 2
