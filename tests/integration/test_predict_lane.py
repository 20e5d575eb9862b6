"""A plain /v1 predict request (Content-Type exactly application/json, the documented shape)
takes the gateway's short lane (lane.py); the same request sent with `; charset=utf-8` goes
FastAPI's full route. Both must answer alike: the same predictions and fields for a good
request, the same status and body for each refusal, and a prediction record for each answer.
A real gateway over HTTP, a real nats-server, a real MLflow store."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import eventually
from serving import ROW, serve_champion, start_gateway

from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import PredictionBatch

LANE = {"content-type": "application/json"}
FULL = {"content-type": "application/json; charset=utf-8"}


@pytest.fixture
def db_url() -> None:
    """No service here uses a database."""
    return None


def with_ids(body: dict[str, Any], prefix: str) -> dict[str, Any]:
    if "ids" not in body or not isinstance(body.get("ids"), list):
        return body
    return body | {"ids": [f"{prefix}{i}" for i in body["ids"]]}


GOOD: list[dict[str, Any]] = [
    {"instances": [ROW], "ids": ["a"]},
    {"instances": [ROW, ROW | {"tenure": 40.0, "plan": "pro"}], "ids": ["b", "c"], "key": "k"},
    {"instances": [ROW | {"autopay": False}], "ids": ["d"], "key": None},
]
REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("/v1/models/nope/predict", {"instances": [ROW]}),
    ("/v1/models/churn/predict", {"instances": [ROW, ROW], "ids": ["e"]}),
    ("/v1/models/churn/predict", {"instances": [ROW, ROW], "ids": ["f", "f"]}),
    ("/v1/models/churn/predict", {"instances": [ROW | {"tenure": "three"}]}),
    ("/v1/models/churn/predict", {"instances": [ROW | {"colour": "red"}]}),
    ("/v1/models/churn/predict", {"instances": [ROW, ROW, ROW]}),  # over max_instances 2
]


async def test_the_lane_and_the_full_route_answer_alike(
    settings: Settings, bus: Bus, running: Any, records: list[PredictionBatch]
) -> None:
    champion = await serve_champion(settings, bus)
    gateway = await start_gateway(settings, running, max_instances=2)
    client = gateway.client

    for body in GOOD:
        lane = await client.post(
            "/v1/models/churn/predict", json=with_ids(body, "lane-"), headers=LANE
        )
        full = await client.post(
            "/v1/models/churn/predict", json=with_ids(body, "full-"), headers=FULL
        )
        assert (lane.status_code, full.status_code) == (200, 200)
        assert lane.headers["content-type"] == full.headers["content-type"]
        answered, expected = lane.json(), full.json()
        assert answered["ids"] == [f"lane-{i}" for i in body["ids"]]
        assert expected["ids"] == [f"full-{i}" for i in body["ids"]]
        answered.pop("ids"), expected.pop("ids")
        assert answered == expected
        assert answered["version"] == champion.version
        assert len(answered["predictions"]) == len(body["instances"])

    for path, body in REFUSED:
        lane = await client.post(path, json=body, headers=LANE)
        full = await client.post(path, json=body, headers=FULL)
        assert lane.status_code in (404, 422)
        assert (lane.status_code, lane.json()) == (full.status_code, full.json())

    async def every_answer_recorded() -> bool:
        given = {i for r in records for i in r.ids}
        return all(
            f"{side}-{i}" in given
            for body in GOOD
            for i in body["ids"]
            for side in ("lane", "full")
        )

    await eventually(every_answer_recorded, timeout=20)
    lane_records = [r for r in records if r.ids[0].startswith("lane-")]
    assert sorted(i for r in lane_records for i in r.ids) == sorted(
        f"lane-{i}" for body in GOOD for i in body["ids"]
    )
    assert all(r.route == "champion" and r.version == champion.version for r in lane_records)
