"""The plain predict request's lane: a `POST /v1/models/{model}/predict` whose body is JSON in
exactly the documented shape is answered here, without FastAPI's routing, dependency
solving, request-model and response-model validation (under load at 16 connections those
were about a fifth of the gateway's CPU, py-spy). Anything else (another path or method,
another content type or encoding, a root path, a body that is not strict JSON or not in that
shape) goes on to the application unchanged, its body replayed, and gets the full route's
answer, so every refusal is still the one FastAPI gives.

Past the shape check the request is the full route's: the same `answer` (route choice, id
checks, batching, recording, the canary's fallback) and the same HTTPException handler, so a
404, 422, 500 or 503 is the same body either way. The lane sits inside the server span, the
host check and the body limit (app.py adds it first)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from driftloop.gateway.domain.validation import parse_json_body, plain_predict
from driftloop.gateway.limits import replay

PREFIX = "/v1/models/"
SUFFIX = "/predict"
JSON = b"application/json"

Answer = Callable[
    [str, list[dict[str, Any]], list[str] | None, str | None], Awaitable[dict[str, Any]]
]
ErrorHandler = Callable[[Request, Any], Response | Awaitable[Response]]


def predict_model(path: str) -> str | None:
    """The model a `/v1/models/{model}/predict` path names, else None."""
    if not path.startswith(PREFIX) or not path.endswith(SUFFIX):
        return None
    model = path[len(PREFIX) : -len(SUFFIX)]
    return model if model and "/" not in model else None


class PredictLane:
    """ASGI middleware: the plain predict request's short way (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        answer: Answer,
        route: Any,
        errors: Callable[[], ErrorHandler],
        max_string_length: int,
    ) -> None:
        self.app = app
        self.answer = answer
        self.route = route  # the FastAPI route, for the server span's http.route
        self.errors = errors  # the application's HTTPException handler, looked up per refusal
        self.max_string_length = max_string_length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = (
            predict_model(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path")
            else None
        )
        if model is None or not _plain_headers(scope):
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        if body is None:  # the client went away before its whole body came
            return
        request = plain_predict(_document(body, self.max_string_length))
        if request is None:
            await self.app(scope, replay(body, receive), send)
            return
        scope["route"] = self.route
        scope["path_params"] = {"model": model}
        try:
            answer = await self.answer(
                model, request.instances, request.ids, request.key or _routing_key(scope)
            )
        except StarletteHTTPException as exc:
            refusal = self.errors()(Request(scope, receive), exc)
            response = await refusal if inspect.isawaitable(refusal) else refusal
        else:
            response = JSONResponse(answer)
        await response(scope, receive, send)


def _plain_headers(scope: Scope) -> bool:
    """Content-Type exactly application/json and no Content-Encoding (other forms, and their
    refusals, are the full route's)."""
    content_type = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            if content_type is not None:
                return False
            content_type = value
        elif name == b"content-encoding":
            return False
    return content_type == JSON


def _routing_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-routing-key":
            return bytes(value).decode("latin-1")
    return None


async def _read(receive: Receive) -> bytes | None:
    """The whole body, or None when the client went away first."""
    chunks = []
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _document(body: bytes, max_string_length: int) -> Any:
    """The body as strict JSON, or None when it is not (the full route then says why)."""
    try:
        return parse_json_body(body, max_string_length=max_string_length)
    except ValueError:  # json.JSONDecodeError, BodyError
        return None
