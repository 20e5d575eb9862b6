"""The plain predict request's lane (lane.py): a documented-shape JSON predict body is answered
by the shared `answer` without the application behind it; every other request reaches the
application with its body intact; a refusal from `answer` is rendered by the application's own
HTTPException handler; and nothing the lane takes is a body PredictRequest would refuse."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import HTTPException
from fastapi.exception_handlers import http_exception_handler
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from driftloop.gateway.app import PredictRequest
from driftloop.gateway.domain.validation import plain_predict
from driftloop.gateway.lane import PredictLane, predict_model

ROW = {"tenure": 3.0, "plan": "basic", "autopay": True}


class Behind:
    """The application behind the lane: records what reached it, answers 299."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"behind"})


class Answers:
    """The shared predict answer: records its calls; raises `refusal` when set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any, Any]] = []
        self.refusal: HTTPException | None = None

    async def __call__(self, model: str, instances: Any, ids: Any, key: Any) -> dict[str, Any]:
        self.calls.append((model, instances, ids, key))
        if self.refusal is not None:
            raise self.refusal
        return {"model": model, "ids": ids or ["generated"], "predictions": [1], "p": 0.25}


ROUTE = object()


@pytest.fixture
def parts() -> tuple[Behind, Answers, httpx.AsyncClient]:
    behind, answers = Behind(), Answers()
    lane = PredictLane(
        behind,
        answer=answers,
        route=ROUTE,
        errors=lambda: http_exception_handler,
        max_string_length=100,
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=lane), base_url="http://t")
    return behind, answers, client


JSON = {"content-type": "application/json"}


async def test_a_plain_predict_body_is_answered_in_the_lane(
    parts: tuple[Behind, Answers, httpx.AsyncClient],
) -> None:
    behind, answers, client = parts
    body = {"instances": [ROW, ROW | {"tenure": 4}], "ids": ["a", "b"], "key": "k"}

    got = await client.post("/v1/models/churn/predict", content=json.dumps(body), headers=JSON)

    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    assert got.json() == {"model": "churn", "ids": ["a", "b"], "predictions": [1], "p": 0.25}
    assert answers.calls == [("churn", body["instances"], ["a", "b"], "k")]
    assert behind.seen == []


async def test_the_routing_header_is_the_key_when_the_body_has_none(
    parts: tuple[Behind, Answers, httpx.AsyncClient],
) -> None:
    _, answers, client = parts
    body = json.dumps({"instances": [ROW], "ids": None, "key": None})

    await client.post(
        "/v1/models/churn/predict", content=body, headers=JSON | {"x-routing-key": "user-7"}
    )
    await client.post(
        "/v1/models/churn/predict",
        content=json.dumps({"instances": [ROW], "key": "own"}),
        headers=JSON | {"x-routing-key": "user-7"},
    )

    assert [(ids, key) for _, _, ids, key in answers.calls] == [(None, "user-7"), (None, "own")]


async def test_a_refusal_is_the_application_s_http_error_answer(
    parts: tuple[Behind, Answers, httpx.AsyncClient],
) -> None:
    _, answers, client = parts
    answers.refusal = HTTPException(503, "records full", headers={"Retry-After": "5"})

    got = await client.post(
        "/v1/models/churn/predict", content=json.dumps({"instances": [ROW]}), headers=JSON
    )

    assert got.status_code == 503
    assert got.json() == {"detail": "records full"}
    assert got.headers["retry-after"] == "5"


OTHERS = [
    (
        "POST",
        "/v1/models/churn/predict",
        {"content-type": "application/json; charset=utf-8"},
        b'{"instances": [{}]}',
    ),
    ("POST", "/v1/models/churn/predict", {"content-type": "text/plain"}, b'{"instances": [{}]}'),
    ("POST", "/v1/models/churn/predict", {}, b'{"instances": [{}]}'),
    (
        "POST",
        "/v1/models/churn/predict",
        JSON | {"content-encoding": "gzip"},
        b'{"instances": [{}]}',
    ),
    ("POST", "/v1/models/churn/feedback", JSON, b'{"labels": []}'),
    ("POST", "/v1/models/a/b/predict", JSON, b'{"instances": [{}]}'),
    ("POST", "/v1/models//predict", JSON, b'{"instances": [{}]}'),
    ("POST", "/v2/models/churn/infer", JSON, b'{"inputs": []}'),
    ("PUT", "/v1/models/churn/predict", JSON, b'{"instances": [{}]}'),
    ("POST", "/v1/models/churn/predict", JSON, b'{"instances": [{}]'),
    ("POST", "/v1/models/churn/predict", JSON, b'{"instances": [{"tenure": NaN}]}'),
    ("POST", "/v1/models/churn/predict", JSON, b'{"instances": [{"plan": "' + b"x" * 101 + b'"}]}'),
    ("POST", "/v1/models/churn/predict", JSON, b""),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), OTHERS)
async def test_every_other_request_reaches_the_application_with_its_body(
    parts: tuple[Behind, Answers, httpx.AsyncClient],
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    behind, answers, client = parts

    got = await client.request(method, path, content=body, headers=headers)

    assert got.status_code == 299
    assert behind.seen == [(method, path, body)]
    assert answers.calls == []


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"instances": []},
        {"instances": {}},
        {"instances": [ROW, 3]},
        {"instances": [ROW], "extra": 1},
        {"instances": [ROW], "ids": "a"},
        {"instances": [ROW], "ids": [1]},
        {"instances": [ROW], "ids": [""]},
        {"instances": [ROW], "ids": ["x" * 257]},
        {"instances": [ROW], "key": 5},
        {"instances": [ROW], "key": "k" * 257},
        {"ids": ["a"]},
    ],
)
async def test_a_body_in_another_shape_is_left_to_the_full_route(
    parts: tuple[Behind, Answers, httpx.AsyncClient], document: Any
) -> None:
    behind, answers, client = parts
    raw = json.dumps(document).encode()

    got = await client.post("/v1/models/churn/predict", content=raw, headers=JSON)

    assert got.status_code == 299
    assert behind.seen == [("POST", "/v1/models/churn/predict", raw)]
    assert answers.calls == []
    with pytest.raises(ValidationError):  # each is one the full route refuses (422)
        PredictRequest.model_validate(document)


async def test_a_root_path_goes_the_full_route(
    parts: tuple[Behind, Answers, httpx.AsyncClient],
) -> None:
    behind, answers, client = parts
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    rooted = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=transport.app, root_path="/api"), base_url="http://t"
    )

    got = await rooted.post(
        "/v1/models/churn/predict", content=json.dumps({"instances": [ROW]}), headers=JSON
    )

    assert got.status_code == 299
    assert [path for _, path, _ in behind.seen] == ["/v1/models/churn/predict"]
    assert answers.calls == []


def test_the_model_is_read_from_the_predict_path() -> None:
    assert predict_model("/v1/models/churn/predict") == "churn"
    assert predict_model("/v1/models/churn v2/predict") == "churn v2"
    assert predict_model("/v1/models/churn") is None
    assert predict_model("/v1/models/predict") is None
    assert predict_model("/v1/models/a/b/predict") is None


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
NEAR_PREDICT = st.fixed_dictionaries(
    {
        "instances": st.lists(
            st.dictionaries(st.text(max_size=3), JSON_VALUES, max_size=3) | JSON_VALUES, max_size=3
        )
    },
    optional={
        "ids": st.none() | st.lists(st.text(max_size=300) | JSON_VALUES, max_size=3) | JSON_VALUES,
        "key": st.none() | st.text(max_size=300) | JSON_VALUES,
        "other": JSON_VALUES,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(NEAR_PREDICT, JSON_VALUES))
def test_the_lane_takes_only_bodies_predict_request_accepts_as_they_are(document: Any) -> None:
    plain = plain_predict(document)
    try:
        accepted = PredictRequest.model_validate(document)
    except ValidationError:
        assert plain is None
        return
    assert plain is not None
    assert (plain.instances, plain.ids, plain.key) == (
        accepted.instances,
        accepted.ids,
        accepted.key,
    )


async def test_the_lane_names_its_route_for_the_server_span() -> None:
    seen: list[Scope] = []
    lane = PredictLane(
        Behind(),
        answer=Answers(),
        route=ROUTE,
        errors=lambda: http_exception_handler,
        max_string_length=100,
    )

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:  # as Traced reads it
        await lane(scope, receive, send)
        seen.append(scope)

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url="http://t")
    await client.post(
        "/v1/models/churn/predict", content=json.dumps({"instances": [ROW]}), headers=JSON
    )

    assert seen[0]["route"] is ROUTE
    assert seen[0]["path_params"] == {"model": "churn"}
