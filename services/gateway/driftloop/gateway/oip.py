"""Open Inference Protocol (V2, the KServe/Triton REST dialect) over the same loaded models.

Inputs are columns: one tensor per feature, shape [N] or [N, 1]; the answer has a `predict`
tensor [N] and, for a classifier, `predict_proba` [N, classes].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from driftloop.gateway.adapters.models import LoadedModel, RouteTable

DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}
RunModel = Callable[
    [str, LoadedModel, Literal["champion", "canary"], list[dict[str, Any]], list[str] | None],
    tuple[list[str], list[Any], list[list[float]] | None],
]


class InferInput(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: str
    data: list[Any]


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    inputs: list[InferInput] = Field(min_length=1)


def _datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def _metadata(loaded: LoadedModel, versions: list[str]) -> dict[str, Any]:
    outputs = [
        {"name": "predict", "datatype": "BYTES" if loaded.classes else "FP64", "shape": [-1]}
    ]
    if loaded.classes is not None:
        outputs.append(
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(loaded.classes)]}
        )
    return {
        "name": loaded.model,
        "versions": versions,
        "platform": "sklearn",
        "inputs": [
            {"name": f, "datatype": DATATYPES.get(t, "BYTES"), "shape": [-1]}
            for f, t in loaded.schema.items()
        ],
        "outputs": outputs,
    }


def _rows(body: InferRequest) -> list[dict[str, Any]]:
    counts = {len(i.data) for i in body.inputs}
    if len(counts) != 1:
        raise HTTPException(
            422,
            [
                {
                    "loc": ["body", "inputs"],
                    "type": "value_error",
                    "msg": "every input needs the same number of rows",
                }
            ],
        )
    for inp in body.inputs:
        if inp.shape[0] != len(inp.data) or (len(inp.shape) == 2 and inp.shape[1] != 1):
            raise HTTPException(
                422,
                [
                    {
                        "loc": ["body", "inputs", inp.name, "shape"],
                        "type": "value_error",
                        "msg": f"shape {inp.shape} does not match "
                        f"{len(inp.data)} values of one column",
                    }
                ],
            )
    n = counts.pop()
    return [{i.name: i.data[r] for i in body.inputs} for r in range(n)]


def register_oip(
    app: FastAPI, *, table: RouteTable, run_model: RunModel, ready: Callable[[], bool]
) -> None:
    def loaded(
        model: str, version: str | None
    ) -> tuple[LoadedModel, Literal["champion", "canary"]]:
        serving = table.serving.get(model)
        if serving is None or serving.champion is None:
            raise HTTPException(404, f"model {model!r} is not served")
        if version is None or version == serving.champion.version:
            return serving.champion, "champion"
        if serving.canary is not None and version == serving.canary.version:
            return serving.canary, "canary"
        raise HTTPException(404, f"version {version} of {model!r} is not served")

    def served_versions(model: str) -> list[str]:
        serving = table.serving.get(model)
        if serving is None:
            return []
        return [m.version for m in (serving.champion, serving.canary) if m is not None]

    @app.get("/v2/health/live", tags=["open inference protocol"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["open inference protocol"])
    async def server_ready() -> JSONResponse:
        ok = ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{model}", tags=["open inference protocol"])
    async def model_metadata(model: str) -> dict[str, Any]:
        return _metadata(loaded(model, None)[0], served_versions(model))

    @app.get("/v2/models/{model}/versions/{version}", tags=["open inference protocol"])
    async def version_metadata(model: str, version: str) -> dict[str, Any]:
        return _metadata(loaded(model, version)[0], [version])

    @app.get("/v2/models/{model}/ready", tags=["open inference protocol"])
    async def model_ready(model: str) -> dict[str, Any]:
        return {"name": model, "ready": loaded(model, None) is not None}

    @app.get("/v2/models/{model}/versions/{version}/ready", tags=["open inference protocol"])
    async def version_ready(model: str, version: str) -> dict[str, Any]:
        return {"name": model, "version": version, "ready": loaded(model, version) is not None}

    async def infer(model: str, version: str | None, body: InferRequest) -> Any:
        try:
            chosen, route = loaded(model, version)
            _ids, predictions, probabilities = run_model(model, chosen, route, _rows(body), None)
        except HTTPException as exc:  # the protocol's error shape: {"error": "..."}
            detail = (
                exc.detail
                if isinstance(exc.detail, str)
                else "; ".join(
                    f"{'.'.join(map(str, d['loc'][1:]))}: {d['msg']}" for d in exc.detail
                )
            )
            return JSONResponse({"error": detail}, status_code=exc.status_code)
        outputs = [
            {
                "name": "predict",
                "shape": [len(predictions)],
                "datatype": _datatype(predictions),
                "data": predictions,
            }
        ]
        if probabilities is not None:
            outputs.append(
                {
                    "name": "predict_proba",
                    "shape": [len(probabilities), len(probabilities[0])],
                    "datatype": "FP64",
                    "data": [p for row in probabilities for p in row],
                }
            )
        return {
            "model_name": model,
            "model_version": chosen.version,
            "id": body.id,
            "outputs": outputs,
        }

    @app.post("/v2/models/{model}/infer", tags=["open inference protocol"])
    async def infer_model(model: str, body: InferRequest) -> Any:
        return await infer(model, None, body)

    @app.post("/v2/models/{model}/versions/{version}/infer", tags=["open inference protocol"])
    async def infer_version(model: str, version: str, body: InferRequest) -> Any:
        return await infer(model, version, body)
