"""Predictions served over the Open Inference Protocol (/v2) carry prediction ids, so their
labels join them: the rows' ids given in the request's `parameters.ids` (or generated) are
the records' and come back in the answer's `parameters.ids`, the request's `id` is echoed, and
wrong ids are refused naming the field. A real gateway over HTTP (and the official
`tritonclient`), a real nats-server, the real monitor joining labels sent to /v1 feedback."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from helpers import eventually
from serving import monitor_samples, serve_champion, start_gateway

from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.events import PredictionBatch

COLUMNS: dict[str, tuple[str, list[Any]]] = {
    "tenure": ("FP64", [3.0, 40.5, 12.0]),
    "monthly_charges": ("FP64", [95.0, 45.25, 70.5]),
    "plan": ("BYTES", ["basic", "max", "pro"]),
    "autopay": ("BOOL", [True, False, True]),
}
INPUTS = [
    {"name": name, "shape": [3], "datatype": datatype, "data": data}
    for name, (datatype, data) in COLUMNS.items()
]


@pytest.fixture
def db_url() -> None:
    """The monitor on its SQLite file."""
    return None


def infer_binary(url: str, ids: list[str]) -> dict[str, Any]:
    """The official client, binary tensors, the ids as a request parameter (blocking)."""
    client = triton.InferenceServerClient(url=url)
    try:
        tensors = []
        for name, (datatype, data) in COLUMNS.items():
            tensor = triton.InferInput(name, [3], datatype)
            dtype = {"FP64": np.float64, "BOOL": np.bool_}.get(datatype, np.object_)
            tensor.set_data_from_numpy(np.array(data, dtype=dtype), binary_data=True)
            tensors.append(tensor)
        result = client.infer("churn", tensors, request_id="r-bin", parameters={"ids": ids})
        response: dict[str, Any] = result.get_response()
        return response
    finally:
        client.close()


async def test_ids_given_over_v2_are_the_records_and_join_labels_sent_to_v1_feedback(
    settings: Settings, bus: Bus, running: Any, records: list[PredictionBatch]
) -> None:
    await serve_champion(settings, bus)
    running(monitor(settings))
    gateway = await start_gateway(settings, running)
    given = ["oip-1", "oip-2", "oip-3"]

    answer = await gateway.client.post(
        "/v2/models/churn/infer",
        json={"id": "req-7", "inputs": INPUTS, "parameters": {"ids": given}},
    )
    binary = await asyncio.to_thread(
        infer_binary, gateway.client.base_url.netloc.decode(), ["bin-1", "bin-2", "bin-3"]
    )
    labels = [{"id": i, "label": n % 2} for n, i in enumerate([*given, "bin-1"])]
    fed = await gateway.client.post("/v1/models/churn/feedback", json={"labels": labels})

    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == "req-7"
    assert answer.json()["parameters"] == {"ids": given}
    assert (binary["id"], binary["parameters"]["ids"]) == ("r-bin", ["bin-1", "bin-2", "bin-3"])
    assert fed.status_code == 202

    async def joined() -> dict[str, Any]:
        found = monitor_samples(settings)
        # both halves: a label may reach the monitor before its answer's record, and is kept
        # until the record joins it
        assert all(i in found and None not in found[i] for i in [*given, "bin-1"]), found
        return found

    found = await eventually(joined, timeout=30)
    predicted = answer.json()["outputs"][0]["data"]
    assert [found[i] for i in given] == [(p, n % 2) for n, p in enumerate(predicted)]
    assert [r.ids for r in records if r.ids[0] in ("oip-1", "bin-1")] == [
        given,
        ["bin-1", "bin-2", "bin-3"],
    ]


async def test_without_ids_the_generated_ones_are_returned_and_recorded(
    settings: Settings, bus: Bus, running: Any, records: list[PredictionBatch]
) -> None:
    await serve_champion(settings, bus)
    gateway = await start_gateway(settings, running)

    answer = await gateway.client.post("/v2/models/churn/infer", json={"inputs": INPUTS})

    assert answer.status_code == 200, answer.text
    ids = answer.json()["parameters"]["ids"]
    assert len(set(ids)) == 3
    assert answer.json()["id"] is None

    async def recorded() -> bool:
        return any(r.ids == ids for r in records)

    await eventually(recorded, timeout=30)


REFUSED: list[tuple[Any, str]] = [  # ids, what the error says
    (["a", "b"], "parameters.ids: ids must have one entry per instance (2 for 3)"),
    (["a", "b", "a"], "parameters.ids: ids must be distinct: 'a' is given 2 times"),
    (["a", 7, "c"], "parameters.ids.1: expected a string"),
    (["a", "b", "x" * 257], "parameters.ids.2: expected a string of 1 to 256 characters"),
    ("a,b,c", "parameters.ids: expected a list of strings, got str"),
]


async def test_wrong_ids_over_v2_are_refused_naming_the_field_and_not_recorded(
    settings: Settings, bus: Bus, running: Any, records: list[PredictionBatch]
) -> None:
    await serve_champion(settings, bus)
    gateway = await start_gateway(settings, running)

    refused = [
        await gateway.client.post(
            "/v2/models/churn/infer", json={"inputs": INPUTS, "parameters": {"ids": ids}}
        )
        for ids, _ in REFUSED
    ]
    rest = await gateway.client.post(
        "/v1/models/churn/predict",
        json={"instances": [{k: v[1][0] for k, v in COLUMNS.items()}] * 2, "ids": ["d", "d"]},
    )

    assert [r.status_code for r in refused] == [422] * len(REFUSED)
    for answer, (_, says) in zip(refused, REFUSED, strict=True):
        assert says in answer.json()["error"]
    assert rest.status_code == 422  # /v1 refuses repeated ids the same way
    assert "ids must be distinct" in rest.text
    await eventually(lambda: gateway.records.pending == 0)
    assert not [r for r in records if "a" in r.ids or "d" in r.ids]
