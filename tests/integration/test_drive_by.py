"""A web page in the user's browser cannot write to a gateway on loopback: a write without
`Content-Type: application/json` is refused (415), and so is any request addressed to a name
other than the gateway's own (421: DNS rebinding). Real HTTP to the real gateway app."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from helpers import SPEC, eventually

from driftloop.shared.bus import Bus
from driftloop.shared.events import SPECS_BUCKET
from driftloop.shared.spec import parse_spec

LABELS = json.dumps({"labels": [{"id": "a", "label": 1}]}).encode()
ROW = {"tenure": 3.0, "monthly_charges": 50.0, "plan": "basic", "autopay": True}
INFER = json.dumps(
    {"inputs": [{"name": "tenure", "shape": [1], "datatype": "FP64", "data": [3.0]}]}
).encode()
WRITES = [
    ("/v1/models/churn/feedback", LABELS, "detail"),
    ("/v1/models/churn/predict", json.dumps({"instances": [ROW]}).encode(), "detail"),
    ("/v2/models/churn/infer", INFER, "error"),
]
WRITE_IDS = ["feedback", "predict", "oip-infer"]


@pytest.fixture
async def known(bus: Bus, gateway: httpx.AsyncClient) -> httpx.AsyncClient:
    """The gateway, knowing the model `churn` from its spec (no version served yet)."""
    await (await bus.kv(SPECS_BUCKET)).put("churn", parse_spec(SPEC).to_json())

    async def listed() -> bool:
        return "churn" in (await gateway.get("/v1/models")).json()["models"]

    await eventually(listed)
    return gateway


@pytest.mark.parametrize(("path", "body", "key"), WRITES, ids=WRITE_IDS)
async def test_a_write_from_a_web_page_without_a_content_type_is_refused(
    known: httpx.AsyncClient, path: str, body: bytes, key: str
) -> None:
    # What fetch(url, {method: "POST", mode: "no-cors", body: blob}) sends: no Content-Type,
    # so no CORS preflight, and the page's Origin.
    answer = await known.post(path, content=body, headers={"Origin": "https://evil.example"})

    assert answer.status_code == 415, answer.text
    assert "application/json" in answer.json()[key]


async def test_feedback_without_a_content_type_is_refused_and_with_one_accepted(
    known: httpx.AsyncClient,
) -> None:
    bare = await known.post("/v1/models/churn/feedback", content=LABELS)
    typed = await known.post(
        "/v1/models/churn/feedback",
        content=LABELS,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert bare.status_code == 415, bare.text
    assert "a Content-Type is required: send application/json" in bare.json()["detail"]
    assert typed.status_code == 202, typed.text


async def test_oip_infer_without_a_content_type_from_a_non_browser_client_is_read_as_json(
    known: httpx.AsyncClient,
) -> None:
    # The official tritonclient sends no Content-Type with a JSON-only infer request.
    answer = await known.post("/v2/models/churn/infer", content=INFER)

    assert answer.status_code == 404, answer.text  # past the gate: no version served yet
    assert "is not served" in answer.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "key"),
    [
        ("POST", "/v1/models/churn/feedback", "detail"),
        ("POST", "/v1/models/churn/predict", "detail"),
        ("POST", "/v2/models/churn/infer", "error"),
        ("GET", "/v1/models/churn", "detail"),
    ],
    ids=["feedback", "predict", "oip-infer", "status"],
)
async def test_a_request_addressed_to_another_name_is_refused(
    known: httpx.AsyncClient, method: str, path: str, key: str
) -> None:
    port = known.base_url.port
    # A page of evil.example whose name was rebound to 127.0.0.1: same origin for the browser,
    # so JSON and no preflight; only the Host header tells.
    body: dict[str, Any] = {"labels": [{"id": "a", "label": 1}]}

    answer = await known.request(
        method,
        path,
        json=body if method == "POST" else None,
        headers={"Host": f"evil.example:{port}"},
    )

    assert answer.status_code == 421, answer.text
    assert "'evil.example:" in answer.json()[key]
    assert "DRIFTLOOP_GATEWAY_HOST" in answer.json()[key]


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "127.0.0.1"],
    ids=["ipv4", "localhost", "localhost-no-port", "ipv6", "ipv4-no-port"],
)
async def test_loopback_names_reach_the_gateway(known: httpx.AsyncClient, host: str) -> None:
    answer = await known.post(
        "/v1/models/churn/feedback",
        content=LABELS,
        headers={"Host": host.format(port=known.base_url.port), "Content-Type": "application/json"},
    )

    assert answer.status_code == 202, answer.text
