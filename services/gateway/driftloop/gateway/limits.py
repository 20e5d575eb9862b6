"""What a request may be: its size, its content type, the name it is addressed to, and JSON
numbers and strings a model can take. Every refusal is a JSON body naming the limit or the
field."""

from __future__ import annotations

import email.message
import ipaddress
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from driftloop.gateway.domain.validation import BodyError, parse_json_body

OIP_PREFIX = "/v2/"
BINARY_HEADER = "inference-header-content-length"  # Triton's binary tensor extension


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Invalid(BaseModel):
    """The fields of a request that cannot be accepted, each by its location."""

    detail: list[FieldProblem]


class OipError(BaseModel):
    """The Open Inference Protocol's error body."""

    error: str


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a /v1 endpoint for its OpenAPI document (each a JSON body)."""
    described = {
        401: "a bearer token is required",
        403: "the token is not accepted",
        404: "unknown model",
        413: "the body is over DRIFTLOOP_MAX_BODY_BYTES",
        415: "the body is not JSON (a write needs Content-Type: application/json)",
        421: "on loopback: addressed (Host) to a name other than the gateway's",
        422: "input that does not match the model's signature or a limit, by field",
        503: "no champion yet, or the bus is unavailable",
    }
    return {
        code: {"model": Invalid if code == 422 else Problem, "description": described[code]}
        for code in codes
    }


def error_response(path: str, status: int, message: str) -> JSONResponse:
    body = {"error": message} if path.startswith(OIP_PREFIX) else {"detail": message}
    return JSONResponse(body, status_code=status)


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413 before the application reads it
    (declared by Content-Length or counted as it streams in)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, scope: Scope) -> JSONResponse:
        return error_response(
            scope["path"],
            413,
            f"the request body is larger than the limit of {self.max_bytes} bytes "
            "(DRIFTLOOP_MAX_BODY_BYTES)",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope)(scope, receive, send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body"))
        await self.app(scope, replay(b"".join(chunks), receive), send)


def is_loopback(host: str) -> bool:
    """`host` (a name or an address, without port or brackets) is localhost or loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header: lower-case, without port, brackets or a trailing dot."""
    value = header.strip().lower()
    name = value[1:].partition("]")[0] if value.startswith("[") else value.partition(":")[0]
    return name.removesuffix(".")


SEEN_HOSTS = 64  # Host headers whose verdict HostCheck keeps (a client names few)


class HostCheck:
    """On a loopback address, refuses (421 Misdirected Request) a request addressed to any
    name but localhost, a loopback address or the one the gateway is bound to. A web page
    whose own name was rebound to 127.0.0.1 (DNS rebinding) is same-origin to the browser,
    so no CORS rule stops it; its Host header still names the page's site."""

    def __init__(self, app: ASGIApp, bound: str) -> None:
        self.app = app
        self.bound = bound
        self.name = bound.strip("[]").lower().removesuffix(".")
        self._seen: dict[str, bool] = {}  # Host header -> allowed, for the first SEEN_HOSTS

    def allowed(self, header: str) -> bool:
        known = self._seen.get(header)
        if known is None:  # parsing an address costs more than the rest of the check
            name = host_name(header)
            known = is_loopback(name) or name == self.name
            if len(self._seen) < SEEN_HOSTS:
                self._seen[header] = known
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # None at all (HTTP/1.0) is no browser's: every browser names the host it asks
            hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
            wrong = [h for h in hosts if not self.allowed(h)]
            if wrong:
                refusal = error_response(
                    scope["path"],
                    421,
                    f"Host {wrong[0][:100]!r} is not this gateway's name: listening on "
                    f"{self.bound}, it answers only requests addressed to localhost, a loopback "
                    "address or DRIFTLOOP_GATEWAY_HOST",
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class StrictJSONRequest(Request):
    """A request whose JSON is read strictly (see parse_json_body); a refused value is a 422
    naming its location."""

    def __init__(self, scope: Scope, receive: Receive, *, max_string_length: int) -> None:
        super().__init__(scope, receive)
        self.max_string_length = max_string_length

    async def json(self) -> Any:
        try:
            return parse_json_body(await self.body(), max_string_length=self.max_string_length)
        except BodyError as exc:
            raise HTTPException(422, [e.as_dict() for e in exc.errors]) from exc


Handler = Callable[[Request], Coroutine[Any, Any, Response]]
BinaryDecoder = Callable[[bytes, str], bytes]


def _from_a_browser(request: Request) -> bool:
    """Browsers send Origin with every POST (and Sec-Fetch-Site on any request); the API's
    own clients (httpx, tritonclient, curl) send neither."""
    return "origin" in request.headers or "sec-fetch-site" in request.headers


def limited_route(*, max_string_length: int, binary: BinaryDecoder) -> type[APIRoute]:
    """A route class that refuses bodies other than JSON (415, naming the content type),
    reads JSON strictly and turns Open Inference Protocol binary tensors into JSON with
    `binary(body, header_length)` (which raises ValueError naming what is wrong).

    A body needs `Content-Type: application/json`: without one a web page can send it to a
    gateway on localhost with no CORS preflight (fetch with mode no-cors and a Blob body).
    The Open Inference Protocol's endpoints alone read a body without one as JSON when the
    request is not from a browser: the official tritonclient sends none with JSON tensors."""

    class LimitedRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handle = super().get_route_handler()
            if self.body_field is None:
                return handle

            async def handler(request: Request) -> Response:
                return await handle(await _json_request(request))

            return handler

    async def _json_request(request: Request) -> Request:
        encoding = request.headers.get("content-encoding", "identity")
        if encoding.lower() != "identity":
            raise HTTPException(415, f"Content-Encoding {encoding!r} is not accepted")
        header = request.headers.get(BINARY_HEADER)
        content_type = request.headers.get("content-type")
        if header is not None and request.url.path.startswith(OIP_PREFIX):
            try:
                body = binary(await request.body(), header)
            except ValueError as exc:
                raise HTTPException(
                    422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]
                ) from exc
            headers = [(k, v) for k, v in request.scope["headers"] if k not in (b"content-type",)]
            scope = {**request.scope, "headers": [*headers, (b"content-type", b"application/json")]}
            return StrictJSONRequest(
                scope, replay(body, request.receive), max_string_length=max_string_length
            )
        if content_type is None:
            if not request.url.path.startswith(OIP_PREFIX) or _from_a_browser(request):
                raise HTTPException(415, "a Content-Type is required: send application/json")
        elif not _is_json(content_type):
            raise HTTPException(
                415, f"Content-Type {content_type!r} is not accepted: send application/json"
            )
        return StrictJSONRequest(
            request.scope, request.receive, max_string_length=max_string_length
        )

    return LimitedRoute
