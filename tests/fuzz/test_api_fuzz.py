"""The REST API fuzzed from its own OpenAPI document (schemathesis) and with request bodies a
model might choke on (hypothesis), against a live gateway serving a really bootstrapped model:
no answer is a 5xx, every answer is documented, and bad input is refused naming the field or
the limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from helpers import eventually, seed_home
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loop import bootstrap, wait_for
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from driftloop.cli.supervisor import free_port, start_nats
from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.gateway.app import create_app
from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.trainer.main import serve as trainer

GOOD = {"tenure": 12.0, "monthly_charges": 70.5, "plan": "pro", "autopay": True}
# Small limits, so that generated requests reach them.
MAX_BODY = 64 * 1024
MAX_INSTANCES = 50
MAX_STRING = 100
FEATURES = sorted(GOOD)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CONFIG: dict[str, Any] = {
    "seed": 20261125,
    "generation": {"max-examples": 20, "mode": "all", "database": "none"},
}
FUZZ = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


async def _serve(
    config: Settings, tmp: Path, up: threading.Event, stop: threading.Event, out: dict[str, Any]
) -> None:
    """Bootstrap a churn model with the real services, then serve it until `stop`."""
    port = free_port()
    app = create_app(config.model_copy(update={"gateway_port": port}))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    services = [asyncio.ensure_future(s(config)) for s in (trainer, evaluator, deployer)]
    gateway = asyncio.ensure_future(server.serve())
    try:
        async with connect_bus(config, service="test") as bus:
            await wait_for(config, await bootstrap(config, bus, tmp, rows=600), "Deployed")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def serving() -> bool:
                answer = await client.post("/v1/models/churn/predict", json={"instances": [GOOD]})
                return answer.status_code == 200

            await eventually(serving)
        for task in services:  # the model is served; nothing else needs to run
            await _cancelled(task)
        out["url"] = f"http://127.0.0.1:{port}"
        up.set()
        await asyncio.to_thread(stop.wait)
    except BaseException as exc:
        out["error"] = exc
        raise
    finally:
        up.set()
        server.should_exit = True
        await asyncio.wait([gateway], timeout=10)
        for task in [*services, gateway]:
            await _cancelled(task)


async def _cancelled(task: asyncio.Future[Any]) -> None:
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live gateway (uvicorn, lifespan and all) serving version 1 of `churn`, bootstrapped
    by the real trainer, evaluator and deployer on a real nats-server; in a thread of its own,
    so synchronous fuzzers can call it."""
    tmp = tmp_path_factory.mktemp("fuzz")
    nats, nats_url = start_nats(tmp / "nats", tmp / "nats.log")
    config = Settings(
        home=seed_home(tmp / "home"),
        nats_url=nats_url,
        mlflow_tracking_uri=f"sqlite:///{tmp / 'home' / 'mlflow.db'}",
        max_body_bytes=MAX_BODY,
        max_instances=MAX_INSTANCES,
        max_string_length=MAX_STRING,
    )
    up, stop, out = threading.Event(), threading.Event(), {}
    thread = threading.Thread(
        target=lambda: asyncio.run(_serve(config, tmp, up, stop, out)), daemon=True
    )
    thread.start()
    try:
        up.wait(240)
        if "url" not in out:
            raise RuntimeError(f"the gateway did not come up: {out.get('error')!r}")
        yield out["url"]
    finally:
        stop.set()
        thread.join(30)
        nats.terminate()
        try:
            nats.wait(10)
        except subprocess.TimeoutExpired:
            nats.kill()


def _document() -> dict[str, Any]:
    """The OpenAPI document, from an app that is never started (the live one serves the same)."""
    return create_app(Settings(home=Path("unused"), gateway_host="127.0.0.1")).openapi()


any_model = schemathesis.openapi.from_dict(
    _document(), config=schemathesis.Config.from_dict(CONFIG)
)
served_model = schemathesis.openapi.from_dict(  # path parameters: the served model and version
    _document(),
    config=schemathesis.Config.from_dict(
        {**CONFIG, "parameters": {"model": "churn", "version": "1"}}
    ),
)


@any_model.parametrize()
def test_any_request_gets_a_documented_answer_and_never_a_server_error(
    gateway_url: str, case: Any
) -> None:
    case.call_and_validate(base_url=gateway_url, checks=CHECKS)


@served_model.parametrize()
def test_requests_to_the_served_model_get_documented_answers_and_never_a_server_error(
    gateway_url: str, case: Any
) -> None:
    case.call_and_validate(base_url=gateway_url, checks=CHECKS)


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=120),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
INSTANCE = st.fixed_dictionaries(
    {f: st.one_of(st.sampled_from([GOOD[f]]), VALUES) for f in FEATURES},
    optional={"extra": VALUES},
)


@FUZZ
@given(instances=st.lists(INSTANCE, min_size=1, max_size=MAX_INSTANCES + 5))
def test_instances_of_any_value_get_predictions_or_a_422_naming_the_field(
    gateway_url: str, instances: list[dict[str, Any]]
) -> None:
    answer = httpx.post(
        f"{gateway_url}/v1/models/churn/predict", json={"instances": instances}, timeout=30
    )

    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 200:
        assert len(answer.json()["predictions"]) == len(instances)
        return
    for error in answer.json()["detail"]:
        loc = error["loc"]
        assert loc[:2] == ["body", "instances"], error
        if len(loc) > 2:
            assert loc[3] in {*instances[loc[2]], *FEATURES}, error
        else:
            assert f"at most {MAX_INSTANCES}" in error["msg"]


NOT_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-2e308", "9" * 30, "9" * 5000]


@FUZZ
@given(
    row=st.integers(min_value=0, max_value=3),
    feature=st.sampled_from(FEATURES),
    literal=st.sampled_from(NOT_NUMBERS),
    path=st.sampled_from(["/v1/models/churn/predict", "/v1/models/nope/predict"]),
)
def test_nan_infinity_and_huge_numbers_get_a_422_naming_the_field(
    gateway_url: str, row: int, feature: str, literal: str, path: str
) -> None:
    rows = [json.dumps(GOOD)] * 4
    rows[row] = json.dumps({**GOOD, feature: "@"}).replace('"@"', literal)
    body = '{"instances": [' + ", ".join(rows) + "]}"

    answer = httpx.post(
        f"{gateway_url}{path}",
        content=body.encode(),
        headers={"content-type": "application/json"},
        timeout=30,
    )

    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "instances", row, feature]
    assert any(word in error["msg"] for word in ("NaN", "Infinity", "range")), error


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/models/churn/predict", "text/plain"),
        ("/v1/models/churn/predict", "application/x-www-form-urlencoded"),
        ("/v1/models/churn/feedback", "application/xml"),
        ("/v2/models/churn/infer", "multipart/form-data; boundary=x"),
    ],
    ids=["text", "form", "xml", "multipart"],
)
def test_a_body_that_is_not_json_gets_a_415_naming_its_content_type(
    gateway_url: str, path: str, content_type: str
) -> None:
    answer = httpx.post(
        f"{gateway_url}{path}",
        content=json.dumps({"instances": [GOOD]}).encode(),
        headers={"content-type": content_type},
    )

    assert answer.status_code == 415
    body = answer.json()
    assert content_type in (body.get("detail") or body["error"])


def test_limits_on_body_size_instances_and_string_length_are_named(gateway_url: str) -> None:
    predict = f"{gateway_url}/v1/models/churn/predict"

    too_large = httpx.post(predict, json={"instances": [GOOD] * 2000})
    streamed = httpx.post(  # no Content-Length: counted as it arrives
        predict,
        content=iter([b'{"instances": [', b"0, " * MAX_BODY, b"0]}"]),
        headers={"content-type": "application/json"},
    )
    too_many = httpx.post(predict, json={"instances": [GOOD] * (MAX_INSTANCES + 1)})
    too_long = httpx.post(predict, json={"instances": [{**GOOD, "plan": "p" * (MAX_STRING + 1)}]})
    oip_too_many = httpx.post(
        f"{gateway_url}/v2/models/churn/infer",
        json={
            "inputs": [
                {"name": f, "shape": [MAX_INSTANCES + 1], "datatype": "BYTES", "data": [v] * 51}
                for f, v in GOOD.items()
            ]
        },
    )

    assert too_large.status_code == 413
    assert "DRIFTLOOP_MAX_BODY_BYTES" in too_large.json()["detail"]
    assert streamed.status_code == 413
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["body", "instances"]
    assert f"at most {MAX_INSTANCES}" in too_many.json()["detail"][0]["msg"]
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "instances", 0, "plan"]
    assert "DRIFTLOOP_MAX_STRING_LENGTH" in too_long.json()["detail"][0]["msg"]
    assert oip_too_many.status_code == 422
    assert "DRIFTLOOP_MAX_INSTANCES" in oip_too_many.json()["error"]


def test_oip_takes_flat_or_nested_columns_and_names_what_is_wrong(gateway_url: str) -> None:
    infer = f"{gateway_url}/v2/models/churn/infer"

    def tensors(nested: bool) -> list[dict[str, Any]]:
        return [
            {
                "name": f,
                "shape": [2, 1],
                "datatype": "BYTES" if isinstance(v, str) else "FP64",
                "data": [[v], [v]] if nested else [v, v],
            }
            for f, v in GOOD.items()
        ]

    flat = httpx.post(infer, json={"inputs": tensors(nested=False)})
    nested = httpx.post(infer, json={"inputs": tensors(nested=True)})
    twice = httpx.post(infer, json={"inputs": [*tensors(nested=False), tensors(False)[0]]})
    no_rows = httpx.post(
        infer, json={"inputs": [{**t, "shape": [0], "data": []} for t in tensors(False)]}
    )
    bad_binary = httpx.post(
        infer,
        content=b'{"inputs": []}garbage',
        headers={"Inference-Header-Content-Length": "14"},
    )

    assert flat.status_code == 200, flat.text
    assert nested.json()["outputs"] == flat.json()["outputs"]
    assert twice.status_code == 422
    assert "its own name" in twice.json()["error"]
    assert no_rows.status_code == 422
    assert "between 1 and" in no_rows.json()["error"]
    assert bad_binary.status_code == 422
    assert "7 bytes after the last binary input" in bad_binary.json()["error"]
