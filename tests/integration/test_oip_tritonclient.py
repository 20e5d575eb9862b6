"""The gateway's Open Inference Protocol V2 endpoints through the official client
(`tritonclient.http`), against a live gateway serving a really bootstrapped model: what the
client reads back equals what /v1 predict answers for the same rows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from helpers import eventually
from loop import bootstrap, wait_for
from tritonclient.utils import InferenceServerException

from driftloop.deployer.main import serve as deployer
from driftloop.evaluator.main import serve as evaluator
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.trainer.main import serve as trainer

ROWS: dict[str, list[Any]] = {
    "tenure": [3.0, 40.5, 12.0],
    "monthly_charges": [95.0, 45.25, 70.5],
    "plan": ["basic", "max", "pro"],
    "autopay": [True, False, True],
}
NUMPY = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_}


@pytest.fixture
def db_url() -> None:
    """The gateway keeps no database; the services behind it use SQLite files."""
    return None


def inputs(metadata: dict[str, Any], *, binary: bool) -> list[triton.InferInput]:
    """One tensor per feature, typed as the model's metadata says."""
    tensors = []
    for spec in metadata["inputs"]:
        values = ROWS[spec["name"]]
        array = np.array(values, dtype=NUMPY.get(spec["datatype"], np.object_))
        tensor = triton.InferInput(spec["name"], [len(values)], spec["datatype"])
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    return tensors


def ask(url: str) -> dict[str, Any]:
    """Everything the client reads from the gateway (blocking: run in a thread)."""
    client = triton.InferenceServerClient(url=url)
    try:
        metadata = client.get_model_metadata("churn")
        answers = {
            binary: client.infer(
                "churn",
                inputs(metadata, binary=binary),
                model_version="1",
                outputs=[
                    triton.InferRequestedOutput("predict", binary_data=binary),
                    triton.InferRequestedOutput("predict_proba", binary_data=binary),
                ],
                request_id="r1",
            )
            for binary in (False, True)
        }
        try:
            client.infer("churn", inputs(metadata, binary=False)[:3])
        except InferenceServerException as exc:
            refused: InferenceServerException | None = exc
        else:
            refused = None
        return {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready("churn"),
            "version_ready": client.is_model_ready("churn", "1"),
            "unknown_ready": client.is_model_ready("nope"),
            "unknown_version_ready": client.is_model_ready("churn", "9"),
            "server": client.get_server_metadata(),
            "metadata": metadata,
            "version_metadata": client.get_model_metadata("churn", "1"),
            "predict": {b: r.as_numpy("predict").tolist() for b, r in answers.items()},
            "proba": {b: r.as_numpy("predict_proba") for b, r in answers.items()},
            "response": answers[False].get_response(),
            "refused": refused,
            "omitted": metadata["inputs"][-1]["name"],
        }
    finally:
        client.close()


async def test_the_official_client_reads_metadata_and_gets_the_same_answers_as_v1_predict(
    settings: Settings, bus: Bus, running: Any, gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    for serve in (trainer, evaluator, deployer):
        running(serve(settings))
    await wait_for(settings, await bootstrap(settings, bus, tmp_path, rows=600), "Deployed")
    rows = [dict(zip(ROWS, values, strict=True)) for values in zip(*ROWS.values(), strict=True)]

    async def predicted() -> dict[str, Any] | None:
        answer = await gateway.post("/v1/models/churn/predict", json={"instances": rows})
        return answer.json() if answer.status_code == 200 else None

    v1 = await eventually(predicted)
    seen = await asyncio.to_thread(ask, gateway.base_url.netloc.decode())

    assert seen["live"] is True
    assert seen["ready"] is True
    assert seen["model_ready"] is True
    assert seen["version_ready"] is True
    assert seen["unknown_ready"] is False
    assert seen["unknown_version_ready"] is False
    assert seen["server"]["name"] == "driftloop"
    metadata = seen["metadata"]
    assert metadata["name"] == "churn"
    assert metadata["versions"] == ["1"]
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == {
        "tenure": "FP64",
        "monthly_charges": "FP64",
        "plan": "BYTES",
        "autopay": "BOOL",
    }
    assert {o["name"] for o in metadata["outputs"]} == {"predict", "predict_proba"}
    assert seen["version_metadata"]["versions"] == ["1"]
    assert seen["response"]["model_version"] == "1"
    assert seen["response"]["id"] == "r1"
    for binary in (False, True):
        assert seen["predict"][binary] == v1["predictions"]
        np.testing.assert_allclose(seen["proba"][binary], v1["probabilities"], atol=1e-6)
    refused = seen["refused"]
    assert refused is not None
    assert refused.status() == "422"
    assert seen["omitted"] in refused.message()
