"""Open Inference Protocol (V2, the KServe/Triton REST dialect) over the same loaded models.

Inputs are columns: one tensor per feature, shape [N] or [N, 1], as JSON `data` or in
Triton's binary tensor extension (what `tritonclient` sends by default); the answer has a
`predict` tensor [N] and, for a classifier, `predict_proba` [N, classes], always as JSON.
Errors are the protocol's `{"error": "..."}`. Prediction ids (what labels are joined on): one
per row in the request's `parameters.ids`, as /v1's `ids`, else generated; either way they
come back in the answer's `parameters.ids`, and the request's `id` is echoed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from driftloop.gateway.adapters.models import LoadedModel, RouteTable
from driftloop.gateway.domain.validation import validate_ids
from driftloop.gateway.limits import OIP_PREFIX, OipError

DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}
NUMPY_TYPES = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": OipError, "description": "the model or version is not served"},
    413: {"model": OipError, "description": "the body is over DRIFTLOOP_MAX_BODY_BYTES"},
    415: {"model": OipError, "description": "the body is not JSON or binary tensors"},
    421: {"model": OipError, "description": "on loopback: addressed to another name (Host)"},
    422: {"model": OipError, "description": "inputs that do not match the model"},
}
IDS = "ids"  # the request parameter of the rows' prediction ids (as /v1's `ids`)
IDS_LOC = ("body", "parameters", IDS)
RunModel = Callable[
    [str, LoadedModel, Literal["champion", "canary"], list[dict[str, Any]], list[str] | None],
    Awaitable[tuple[list[str], list[Any], list[list[float]] | None]],
]


class InferInput(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: str
    data: list[Any]


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = Field(default=None, description="the request's id, echoed in the answer")
    inputs: list[InferInput] = Field(min_length=1)
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="`ids`: one distinct prediction id per row (default: generated), the ids "
        "labels are sent with to /v1/models/{model}/feedback; other parameters are ignored",
    )


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None
    parameters: dict[str, Any] = Field(description="`ids`: the rows' prediction ids")
    outputs: list[Tensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Readiness(BaseModel):
    name: str
    ready: bool
    version: str | None = None


def _decode_tensor(raw: bytes, datatype: Any, name: Any) -> list[Any]:
    if datatype == "BYTES":
        values: list[Any] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise ValueError(f"input {name!r}: a BYTES element without its 4-byte length")
            (size,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + size > len(raw):
                raise ValueError(f"input {name!r}: a BYTES element runs past its tensor")
            try:
                values.append(raw[offset : offset + size].decode())
            except UnicodeDecodeError as exc:
                raise ValueError(f"input {name!r}: a BYTES element is not UTF-8") from exc
            offset += size
        return values
    dtype = NUMPY_TYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise ValueError(f"input {name!r}: unknown datatype {datatype!r}")
    if len(raw) % np.dtype(dtype).itemsize:
        raise ValueError(f"input {name!r}: {len(raw)} bytes are not whole {datatype} values")
    decoded: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
    return decoded


def binary_to_json(raw: bytes, header_length: str) -> bytes:
    """A request in Triton's binary tensor extension (a JSON header of `header_length` bytes,
    then each input's `parameters.binary_data_size` bytes in order) as the plain JSON
    request; raises ValueError naming what is wrong."""
    if not header_length.isdigit() or not 0 < int(header_length) <= len(raw):
        raise ValueError(f"Inference-Header-Content-Length {header_length!r} does not fit the body")
    end = int(header_length)
    try:
        header = json.loads(raw[:end])
    except ValueError as exc:
        raise ValueError(f"the inference header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise ValueError("the inference header needs a list of inputs")
    offset = end
    for tensor in header["inputs"]:
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        size = parameters.pop("binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(raw):
            raise ValueError(f"input {tensor.get('name')!r}: bad binary_data_size {size!r}")
        if offset + size > len(raw):
            raise ValueError(f"input {tensor.get('name')!r}: the body ends inside its data")
        tensor["data"] = _decode_tensor(
            raw[offset : offset + size], tensor.get("datatype"), tensor.get("name")
        )
        offset += size
    if offset != len(raw):
        raise ValueError(f"{len(raw) - offset} bytes after the last binary input")
    return json.dumps(header).encode()


def _message(detail: Any) -> str:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        )
    return str(detail)


def _datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def _metadata(loaded: LoadedModel, versions: list[str]) -> ModelMetadata:
    outputs = [
        {
            "name": "predict",
            "datatype": "FP64" if loaded.classes is None else _datatype(loaded.classes),
            "shape": [-1],
        }
    ]
    if loaded.classes is not None:
        outputs.append(
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(loaded.classes)]}
        )
    return ModelMetadata.model_validate(
        {
            "name": loaded.model,
            "versions": versions,
            "platform": "sklearn",
            "inputs": [
                {"name": f, "datatype": DATATYPES.get(t, "BYTES"), "shape": [-1]}
                for f, t in loaded.schema.items()
            ],
            "outputs": outputs,
        }
    )


def _invalid(loc: list[str | int], msg: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", *loc], "type": "value_error", "msg": msg}])


def _column(tensor: InferInput) -> list[Any]:
    """A tensor's values; [N, 1] data may come nested, row by row, as the protocol allows."""
    if len(tensor.shape) == 2 and all(isinstance(v, list) and len(v) == 1 for v in tensor.data):
        return [v[0] for v in tensor.data]
    return tensor.data


def _rows(body: InferRequest, max_rows: int) -> list[dict[str, Any]]:
    for tensor in body.inputs:
        tensor.data = _column(tensor)
    names = [i.name for i in body.inputs]
    if len(set(names)) != len(names):
        raise _invalid(["inputs"], "every input needs its own name")
    counts = {len(i.data) for i in body.inputs}
    if len(counts) != 1:
        raise _invalid(["inputs"], "every input needs the same number of rows")
    for k, inp in enumerate(body.inputs):
        if inp.shape[0] != len(inp.data) or (len(inp.shape) == 2 and inp.shape[1] != 1):
            raise _invalid(
                ["inputs", k, "shape"],
                f"shape {inp.shape} of {inp.name!r} does not match "
                f"{len(inp.data)} values of one column",
            )
    n = counts.pop()
    if not 0 < n <= max_rows:
        raise _invalid(
            ["inputs"],
            f"{n} rows: between 1 and {max_rows} rows per request (DRIFTLOOP_MAX_INSTANCES)",
        )
    return [{i.name: i.data[r] for i in body.inputs} for r in range(n)]


def _register_errors(app: FastAPI) -> None:
    """The protocol's `{"error": "..."}` under /v2/, FastAPI's `{"detail": ...}` elsewhere."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if request.url.path.startswith(OIP_PREFIX):
            return JSONResponse(
                {"error": _message(exc.detail)}, status_code=exc.status_code, headers=exc.headers
            )
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Any:
        if request.url.path.startswith(OIP_PREFIX):
            return JSONResponse({"error": _message(list(exc.errors()))}, status_code=422)
        return await request_validation_exception_handler(request, exc)


def register_oip(
    app: FastAPI,
    *,
    table: RouteTable,
    run_model: RunModel,
    ready: Callable[[], bool],
    max_rows: int,
) -> None:
    _register_errors(app)
    tags: list[str | Any] = ["open inference protocol"]

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
        raise HTTPException(404, f"version {version!r} of {model!r} is not served")

    def served_versions(model: str) -> list[str]:
        serving = table.serving.get(model)
        if serving is None:
            return []
        return [m.version for m in (serving.champion, serving.canary) if m is not None]

    @app.get("/v2", tags=tags)
    async def server_metadata() -> dict[str, Any]:
        return {"name": "driftloop", "version": app.version, "extensions": []}

    @app.get("/v2/health/live", tags=tags)
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get(
        "/v2/health/ready",
        tags=tags,
        response_model=dict[str, bool],
        responses={503: {"model": dict[str, bool], "description": "not ready"}},
    )
    async def server_ready() -> JSONResponse:
        ok = ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{model}", tags=tags, responses=ERRORS)
    async def model_metadata(model: str) -> ModelMetadata:
        return _metadata(loaded(model, None)[0], served_versions(model))

    @app.get("/v2/models/{model}/versions/{version}", tags=tags, responses=ERRORS)
    async def version_metadata(model: str, version: str) -> ModelMetadata:
        return _metadata(loaded(model, version)[0], [version])

    @app.get("/v2/models/{model}/ready", tags=tags, responses=ERRORS)
    async def model_ready(model: str) -> Readiness:
        loaded(model, None)
        return Readiness(name=model, ready=True)

    @app.get("/v2/models/{model}/versions/{version}/ready", tags=tags, responses=ERRORS)
    async def version_ready(model: str, version: str) -> Readiness:
        loaded(model, version)
        return Readiness(name=model, version=version, ready=True)

    async def infer(model: str, version: str | None, body: InferRequest) -> InferResponse:
        chosen, route = loaded(model, version)
        rows = _rows(body, max_rows)
        given = (body.parameters or {}).get(IDS)
        problems = [] if given is None else validate_ids(given, len(rows), IDS_LOC)
        if problems:
            raise HTTPException(422, [p.as_dict() for p in problems])
        ids, predictions, probabilities = await run_model(model, chosen, route, rows, given)
        outputs = [
            Tensor(
                name="predict",
                shape=[len(predictions)],
                datatype=_datatype(predictions),
                data=predictions,
            )
        ]
        if probabilities is not None:
            outputs.append(
                Tensor(
                    name="predict_proba",
                    shape=[len(probabilities), len(probabilities[0])],
                    datatype="FP64",
                    data=[p for row in probabilities for p in row],
                )
            )
        return InferResponse(
            model_name=model,
            model_version=chosen.version,
            id=body.id,
            parameters={IDS: ids},
            outputs=outputs,
        )

    @app.post("/v2/models/{model}/infer", tags=tags, responses=ERRORS)
    async def infer_model(model: str, body: InferRequest) -> InferResponse:
        return await infer(model, None, body)

    @app.post("/v2/models/{model}/versions/{version}/infer", tags=tags, responses=ERRORS)
    async def infer_version(model: str, version: str, body: InferRequest) -> InferResponse:
        return await infer(model, version, body)
