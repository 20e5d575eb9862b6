"""The gateway's REST API: predict, feedback, model status, health and metrics."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Header, HTTPException, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from driftloop.gateway.adapters.batcher import Batcher
from driftloop.gateway.adapters.models import LoadedModel, RouteTable
from driftloop.gateway.adapters.records import MirrorJob, RecordPublisher
from driftloop.gateway.adapters.shadow import ShadowWorker
from driftloop.gateway.config import GatewaySettings
from driftloop.gateway.console.routes import console_router
from driftloop.gateway.domain.batching import BatchBounds
from driftloop.gateway.domain.validation import (
    MAX_ID_LENGTH,
    MAX_KEY_LENGTH,
    choose_route,
    validate_ids,
    validate_instances,
    validate_labels,
)
from driftloop.gateway.lane import PredictLane
from driftloop.gateway.limits import (
    BodyLimit,
    HostCheck,
    documented,
    is_loopback,
    limited_route,
)
from driftloop.gateway.occupancy import Occupancy, Occupied
from driftloop.gateway.oip import binary_to_json, register_oip
from driftloop.gateway.spools import WorkerSlot, adopt_orphans, lock_wait, spool_paths
from driftloop.shared.auth import TokenSet
from driftloop.shared.buckets import live_keys
from driftloop.shared.bus import Bus, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.db import ordered_id
from driftloop.shared.events import (
    EVENTS_STREAM,
    ROUTES_BUCKET,
    SPECS_BUCKET,
    FeedbackBatch,
    Label,
    PredictionBatch,
)
from driftloop.shared.registry import configure_mlflow
from driftloop.shared.telemetry import dropped_root

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
MONITOR_STATUS = "driftloop.rpc.monitor.status"
IDS = ("body", "ids")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[dict[str, Any]] = Field(
        min_length=1, description="one object per row: feature -> value (DRIFTLOOP_MAX_INSTANCES)"
    )
    ids: list[Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]] | None = Field(
        default=None, description="one distinct prediction id per instance (default: generated)"
    )
    key: str | None = Field(
        default=None, max_length=MAX_KEY_LENGTH, description="routing key (sticky)"
    )


class PredictResponse(BaseModel):
    model: str
    version: str
    route: str
    ids: list[str]
    predictions: list[Any]
    classes: list[Any] | None = None
    probabilities: list[list[float]] | None = None


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[Label] = Field(min_length=1, description="at most DRIFTLOOP_MAX_INSTANCES")


class Accepted(BaseModel):
    accepted: int


class Readiness(BaseModel):
    ready: bool
    nats: bool
    routes_loaded: bool


def _too_many(field: str, count: int, limit: int) -> HTTPException:
    return HTTPException(
        422,
        [
            {
                "loc": ["body", field],
                "type": "too_long",
                "msg": f"{count} {field}: at most {limit} per request (DRIFTLOOP_MAX_INSTANCES)",
            }
        ],
    )


class ModelStatus(BaseModel):
    model: str
    champion: dict[str, Any] | None
    canary: dict[str, Any] | None
    shadow: dict[str, Any] | None
    rollout: dict[str, Any] | None
    last_drift: dict[str, Any] | None
    monitor: dict[str, Any] | None = None
    last_verdict: dict[str, Any] | None = None


def freeze_heap() -> None:
    """Take what start-up left alive (mlflow, scikit-learn, pandas, FastAPI: some 270,000
    objects) out of the cyclic garbage collector's reach. Without it every full collection
    walked them all on the event loop (0.34 s on a slow 2-core machine): all connections
    paused about every 25 s under load, which was the gateway's whole p99 at 16 connections
    (py-spy: gc_collect_main under a publish). Frozen objects are still freed by reference
    counting; RouteTable freezes each model it loads the same way."""
    gc.collect()
    gc.freeze()


async def keep_setting(gauge: Gauge, publisher: RecordPublisher) -> None:
    """The spool depth, every SPOOL_DEPTH_EVERY s, for a gauge in multiprocess mode."""
    while True:
        gauge.set(publisher.pending)
        await asyncio.sleep(SPOOL_DEPTH_EVERY)


class InsecureBindError(RuntimeError):
    """Refusing to serve writes without tokens on a non-loopback address."""


def check_access_mode(settings: Settings) -> None:
    """Refuse a non-loopback address without a token: read as the token gate reads the list,
    so a list of blanks or commas (no token) is refused too."""
    if not TokenSet(settings.api_tokens).required and not is_loopback(settings.gateway_host):
        raise InsecureBindError(
            f"refusing to listen on {settings.gateway_host} without DRIFTLOOP_API_TOKENS: "
            "with no tokens the gateway serves writes on a loopback address only "
            "(set DRIFTLOOP_API_TOKENS, or DRIFTLOOP_GATEWAY_HOST=127.0.0.1)"
        )


class Traced:
    """One SERVER span per HTTP request, named by its route (plain ASGI: no per-request task
    or body wrapping, unlike Starlette's BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if dropped_root(SpanKind.SERVER, {"url.path": scope["path"]}):
            await self.app(scope, receive, send)  # a request the sampler would drop: no span
            return
        method = scope["method"]
        with _tracer.start_as_current_span(
            method, kind=SpanKind.SERVER, attributes=_http_attributes(scope)
        ) as span:

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:  # a server span's error: 5xx only (semconv)
                        span.set_status(Status(StatusCode.ERROR))
                        span.set_attribute("error.type", str(status))
                await send(message)

            await self.app(scope, receive, sending)
            route = getattr(scope.get("route"), "path", None)
            if route is not None:  # the template, not the path: one name per endpoint
                span.set_attribute("http.route", route)
                span.update_name(f"{method} {route}")


def _http_attributes(scope: Scope) -> dict[str, str | int]:
    """The request's HTTP server span attributes (OpenTelemetry semantic conventions)."""
    attributes: dict[str, str | int] = {
        "http.request.method": scope["method"],
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
    try:  # the name the client asked for, as the conventions prefer; else the socket's
        asked = urlsplit(f"//{host}")
        name, port = asked.hostname, asked.port
    except ValueError:  # a Host header that is no host[:port]
        name, port = None, None
    server = scope.get("server")
    if name:
        attributes["server.address"] = name
        if port:
            attributes["server.port"] = port
    elif server:
        attributes["server.address"], attributes["server.port"] = server[0], int(server[1])
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    return attributes


SPOOL_DEPTH_EVERY = 1.0  # seconds between two updates of a worker's spool depth gauge


def create_app(
    settings: Settings,
    bus_factory: Callable[[Settings], Any] | None = None,
    *,
    worker: WorkerSlot | None = None,
) -> FastAPI:
    """The gateway application; nothing connects until the lifespan starts. `worker`: this
    process's slot among several worker processes (workers.py): its own spools, and metrics
    in prometheus_client's multiprocess mode (summed over the workers at each scrape)."""
    check_access_mode(settings)
    worker = worker or WorkerSlot()
    registry = CollectorRegistry()
    requests = Counter(
        "driftloop_requests", "predict requests", ["model", "version", "route"], registry=registry
    )
    errors = Counter(
        "driftloop_errors",
        "failed predict requests (a canary failure answered by the champion counts too)",
        ["model", "version", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "driftloop_predict_seconds",
        "predict latency",
        ["model", "version", "route"],
        registry=registry,
    )
    dropped = Counter(
        "driftloop_records_dropped", "prediction records dropped", ["model"], registry=registry
    )
    dead_lettered = Counter(
        "driftloop_records_dead_lettered",
        "prediction records that can never be published (one row over the server's "
        "max_payload, or refused for good): kept in the spool's dead_letters table",
        ["model"],
        registry=registry,
    )
    shadow_dropped = Counter(
        "driftloop_shadow_dropped",
        "requests not mirrored to the shadow, or not answered by it (it fell behind, its "
        "worker died or could not load it)",
        ["model", "version"],
        registry=registry,
    )
    refused = Counter(
        "driftloop_refused",
        "requests refused with a 503 (endpoint predict: REST and OIP)",
        ["model", "endpoint", "reason"],
        registry=registry,
    )
    batch_rows = Histogram(
        "driftloop_batch_rows",
        "rows per model call (adaptive batching: concurrent requests predicted together)",
        ["model", "version"],
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
        registry=registry,
    )
    model_seconds = Histogram(
        "driftloop_model_call_seconds",
        "time in the model's own predict, per call (a batch of requests is one call)",
        ["model", "version"],
        registry=registry,
    )
    model_cpu = Counter(
        "driftloop_model_cpu_seconds",
        "CPU time of the model's own predict (its thread's): the rest of "
        "process_cpu_seconds_total is the gateway's own work",
        ["model", "version"],
        registry=registry,
    )
    spool_depth = Gauge(
        "driftloop_record_spool_depth",
        "prediction records on disk, answered but not yet acknowledged by JetStream "
        "(predict answers 503 once DRIFTLOOP_RECORD_SPOOL_CAPACITY is reached); with several "
        "workers the sum of theirs, each updated every second",
        registry=registry,
        multiprocess_mode="livesum",
    )
    if not worker.multiprocess:  # per process: a scrape of several workers reaches any one
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory, ...

    def observe(model: str, version: str, rows: int, seconds: float, cpu: float) -> None:
        batch_rows.labels(model, version).observe(rows)
        model_seconds.labels(model, version).observe(seconds)
        model_cpu.labels(model, version).inc(cpu)

    own = settings if isinstance(settings, GatewaySettings) else GatewaySettings.model_construct()
    occupancy = Occupancy()  # main.py has it watch the server's connections
    batcher = Batcher(
        BatchBounds(own.batch_max_rows, own.batch_max_wait_ms / 1000),
        observe=observe,
        nobody_coming=occupancy.all_busy,
    )
    table = RouteTable(compile_trees=own.compiled_trees)
    state: dict[str, Any] = {}
    tokens = TokenSet(settings.api_tokens)  # kept as SHA-256 digests, compared in constant time
    rng = random.Random()

    @asynccontextmanager
    async def lifespan(this: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(configure_mlflow, settings)  # may create its tables
        connect = bus_factory or (lambda s: connect_bus(s, service="gateway"))
        async with connect(settings) as bus:
            spools = settings.home / "spool"
            records, shadows = spool_paths(spools, settings.gateway_port, worker.slot)
            publisher = RecordPublisher(
                bus,
                capacity=own.record_spool_capacity,
                dropped=dropped,
                spool=records,
                dead_letters=dead_lettered,
                lock_wait=lock_wait(worker.slot),
            )
            mirror = ShadowWorker(  # publishes its records itself, from its own spool
                tracking_uri=settings.tracking_uri(),
                nats_url=settings.resolved_nats_url(),
                spool=shadows,
                spool_capacity=own.record_spool_capacity,
                capacity=own.shadow_capacity,
                dropped=shadow_dropped,
                priority=own.shadow_priority,
                compile_trees=own.compiled_trees,
                lock_wait=lock_wait(worker.slot),
            )
            table.on_shadow = mirror.set_shadow
            this.state.shadow = mirror  # for tests and operators: its worker's pid
            this.state.records = publisher  # for tests and operators: the spool's depth
            state["bus"], state["publisher"], state["mirror"] = bus, publisher, mirror
            routes = await bus.kv(ROUTES_BUCKET)
            models = await live_keys(bus.js, routes, ROUTES_BUCKET)  # before the watch starts
            tasks = [
                asyncio.create_task(table.watch_routes(routes, models)),
                asyncio.create_task(table.watch_specs(await bus.kv(SPECS_BUCKET))),
                asyncio.create_task(publisher.run()),
                asyncio.create_task(mirror.run()),
                asyncio.create_task(  # the spools of workers that are gone (spools.py)
                    adopt_orphans(
                        spools,
                        settings.gateway_port,
                        worker,
                        bus,
                        publisher,
                        capacity=own.record_spool_capacity,
                        dead_letters=dead_lettered,
                    )
                ),
            ]
            if worker.multiprocess:  # set_function is not for multiprocess mode
                tasks.append(asyncio.create_task(keep_setting(spool_depth, publisher)))
            else:
                spool_depth.set_function(lambda: publisher.pending)
            freeze_heap()
            try:
                yield
            finally:
                await mirror.stop()  # it answers, spools and publishes what it holds
                await publisher.flush()
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with suppress(asyncio.CancelledError, Exception):
                        await task
                publisher.close()

    app = FastAPI(
        title="driftloop gateway",
        version="0.1.0",
        lifespan=lifespan,
        # No Content-Type is left to LimitedRoute (415, but JSON for the OIP's own clients).
        strict_content_type=False,
        # Our own server span per request (Traced) and Prometheus metrics instead of FastAPI's
        # native telemetry, which cost a quarter of the gateway's CPU under load (py-spy).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.router.route_class = limited_route(
        max_string_length=settings.max_string_length, binary=binary_to_json
    )

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if not tokens.required:
            return
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(
                401,
                "a bearer token is required (DRIFTLOOP_API_TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not tokens.accepts(authorization[7:].strip()):
            raise HTTPException(403, "this token is not accepted")

    def serving_for(model: str) -> Any:
        if not table.known(model):
            raise HTTPException(404, f"unknown model {model!r}")
        serving = table.serving.get(model)
        if serving is None or serving.champion is None:
            refused.labels(model, "predict", "no_champion").inc()
            raise HTTPException(503, f"model {model!r} has no champion yet")
        return serving

    async def run_model(
        model: str,
        chosen: LoadedModel,
        route: Literal["champion", "canary"],
        instances: list[dict[str, Any]],
        ids: list[str] | None,
    ) -> tuple[list[str], list[Any], list[list[float]] | None]:
        """Validate, predict (with concurrent requests for the same version: Batcher),
        count, and record (off the request path) one request."""
        problems = validate_instances(instances, chosen.schema)
        if problems:
            errors.labels(model, chosen.version, route, "422").inc()
            raise HTTPException(422, [p.as_dict() for p in problems])
        ids = ids or [ordered_id() for _ in instances]
        started = time.perf_counter()
        try:
            predictions, probabilities = await batcher.predict(chosen, instances)
        except Exception as exc:
            errors.labels(model, chosen.version, route, "500").inc()
            logger.exception("predict failed", extra={"model": model, "version": chosen.version})
            # a failure is a live figure of the version too
            await state["publisher"].keep(
                PredictionBatch(
                    model=model,
                    version=chosen.version,
                    route=route,
                    ids=ids,
                    instances=instances,
                    predictions=[],
                    latency_ms=(time.perf_counter() - started) * 1000,
                    at=datetime.now(UTC),
                    error=f"{type(exc).__name__}: {exc}"[:500],
                )
            )
            raise HTTPException(
                500, f"model {model} version {chosen.version} failed: {type(exc).__name__}"
            ) from exc
        elapsed = time.perf_counter() - started
        requests.labels(model, chosen.version, route).inc()
        latency.labels(model, chosen.version, route).observe(elapsed)
        queued = await state["publisher"].keep(
            PredictionBatch(
                model=model,
                version=chosen.version,
                route=route,
                ids=ids,
                instances=[{f: inst.get(f) for f in chosen.features} for inst in instances],
                predictions=predictions,
                latency_ms=elapsed * 1000,
                at=datetime.now(UTC),
            )
        )
        if not queued:  # the bus has been away too long: refuse (and count) rather than serve
            errors.labels(model, chosen.version, route, "503").inc()  # an unrecorded answer
            refused.labels(model, "predict", "records_full").inc()
            raise HTTPException(
                503,
                "prediction records cannot be delivered right now (the bus is unavailable and "
                "the record queue is full): retry later",
                headers={"Retry-After": "5"},
            )
        serving = table.serving.get(model)
        shadow = serving.routes.shadow if serving is not None else None
        if shadow is not None and route == "champion":
            state["mirror"].offer(MirrorJob(model, shadow.version, instances, ids))
        return ids, predictions, probabilities

    async def answer(
        model: str, instances: list[dict[str, Any]], given: list[str] | None, key: str | None
    ) -> dict[str, Any]:
        """A /v1 predict request's answer (PredictResponse's fields); raises HTTPException.
        Shared by the FastAPI route and the plain request's lane (lane.py)."""
        serving = serving_for(model)
        if len(instances) > settings.max_instances:
            raise _too_many("instances", len(instances), settings.max_instances)
        route = choose_route(key, serving.routes.canary.weight if serving.canary else 0, rng=rng)
        chosen: LoadedModel = serving.canary if route == "canary" else serving.champion
        problems = [] if given is None else validate_ids(given, len(instances), IDS)
        if problems:
            raise HTTPException(422, [p.as_dict() for p in problems])
        given = given or [ordered_id() for _ in instances]
        try:
            ids, predictions, probabilities = await run_model(
                model, chosen, route, instances, given
            )
        except HTTPException as exc:
            if exc.status_code != 500 or route != "canary":
                raise
            # The canary failed (counted against it, and in its live stats): the request is
            # still answered, by the champion. A bad canary costs its errors, not the clients'.
            chosen, route = serving.champion, "champion"
            ids, predictions, probabilities = await run_model(
                model, chosen, route, instances, given
            )
        return {
            "model": model,
            "version": chosen.version,
            "route": route,
            "ids": ids,
            "predictions": predictions,
            "classes": chosen.classes,
            "probabilities": probabilities,
        }

    @app.post(
        "/v1/models/{model}/predict",
        response_model=PredictResponse,
        responses=documented(404, 413, 415, 421, 422, 503),
    )
    async def predict(
        model: str, body: PredictRequest, x_routing_key: Annotated[str | None, Header()] = None
    ) -> PredictResponse:
        return PredictResponse(
            **await answer(model, body.instances, body.ids, body.key or x_routing_key)
        )

    @app.post(
        "/v1/models/{model}/feedback",
        dependencies=[Depends(require_token)],
        status_code=202,
        response_model=Accepted,
        responses=documented(401, 403, 404, 413, 415, 421, 422, 503),
    )
    async def feedback(
        model: str,
        body: FeedbackRequest,
    ) -> Accepted:
        if not table.known(model):
            raise HTTPException(404, f"unknown model {model!r}")
        if len(body.labels) > settings.max_instances:
            raise _too_many("labels", len(body.labels), settings.max_instances)
        problems = validate_labels([label.label for label in body.labels])
        if problems:
            raise HTTPException(422, [p.as_dict() for p in problems])
        batch = FeedbackBatch(model=model, labels=body.labels, at=datetime.now(UTC))
        try:
            await state["bus"].publish_record(
                f"driftloop.feedback.{model}", batch, msg_id=batch.batch_id
            )
        except Exception as exc:
            refused.labels(model, "feedback", "bus_unavailable").inc()
            raise HTTPException(503, f"labels not accepted, the bus is unavailable: {exc}") from exc
        return Accepted(accepted=len(body.labels))

    async def last_verdict(model: str) -> dict[str, Any] | None:
        """The evaluator's newest verdict on the model, from the events stream (the audit log)
        by JetStream's last-message-per-subject lookup, not a scan."""
        found = []
        for verdict in ("EvaluationPassed", "EvaluationFailed"):
            with suppress(Exception):
                found.append(
                    await state["bus"].js.get_last_msg(
                        EVENTS_STREAM, f"driftloop.events.{model}.{verdict}"
                    )
                )
        if not found:
            return None
        env = json.loads(max(found, key=lambda m: m.seq).data)
        data = env.get("data") or {}
        return {
            "verdict": "passed" if env.get("type") == "EvaluationPassed" else "failed",
            "at": env.get("time"),
            **{
                k: data.get(k)
                for k in (
                    "cycle_id",
                    "version",
                    "champion_version",
                    "metric",
                    "challenger_score",
                    "champion_score",
                    "reason",
                )
            },
            "failed_checks": [c for c in data.get("checks") or [] if not c.get("passed")],
        }

    @app.get(
        "/v1/models/{model}",
        response_model=ModelStatus,
        responses=documented(404),
    )
    async def model_status(model: str) -> ModelStatus:
        if not table.known(model):
            raise HTTPException(404, f"unknown model {model!r}")
        serving = table.serving.get(model)
        routes = serving.routes if serving else None
        monitor: dict[str, Any] | None = None
        with suppress(Exception):
            monitor = await state["bus"].request(MONITOR_STATUS, {"model": model}, timeout=1.0)
        return ModelStatus(
            last_verdict=await last_verdict(model),
            model=model,
            champion={"version": routes.champion.version, **predictor(serving.champion)}
            if serving and routes and routes.champion
            else None,
            canary={
                "version": routes.canary.version,
                "weight": routes.canary.weight,
                **predictor(serving.canary),
            }
            if serving and routes and routes.canary
            else None,
            shadow={"version": routes.shadow.version} if routes and routes.shadow else None,
            rollout=routes.rollout if routes else None,
            last_drift=(monitor or {}).get("last_drift"),
            monitor=monitor,
        )

    def predictor(loaded: LoadedModel | None) -> dict[str, str]:
        return {"predictor": loaded.predictor} if loaded is not None else {}

    @app.get("/v1/models")
    async def list_models() -> dict[str, list[str]]:
        return {"models": sorted(set(table.serving) | table.specs)}

    app.include_router(  # the web console at /ui (console/routes.py)
        console_router(
            settings,
            models=list_models,
            status=model_status,
            bus=lambda: state["bus"],
            require_token=require_token,
            tokens_required=tokens.required,
            route_class=app.router.route_class,
        )
    )

    register_oip(
        app,
        table=table,
        run_model=run_model,
        ready=lambda: readiness()[0],
        max_rows=settings.max_instances,
    )

    def readiness() -> tuple[bool, bool]:
        bus: Bus | None = state.get("bus")
        connected = bool(bus and bus.nc.is_connected)
        return connected and table.ready.is_set(), connected

    @app.get("/healthz")
    async def healthz() -> dict[str, str | int]:
        # the pid tells which of several worker processes answered
        return {"status": "alive", "pid": os.getpid()}

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "not ready"}},
    )
    async def readyz() -> JSONResponse:
        ready, connected = readiness()
        return JSONResponse(
            {"ready": ready, "nats": connected, "routes_loaded": table.ready.is_set()},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        if not worker.multiprocess:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        every = CollectorRegistry()  # every worker's files under PROMETHEUS_MULTIPROC_DIR
        multiprocess.MultiProcessCollector(every)  # type: ignore[no-untyped-call]  # untyped lib
        return Response(generate_latest(every), media_type=CONTENT_TYPE_LATEST)

    # Innermost first: the plain predict request's lane inside the server span, the body
    # limit and the host check (lane.py).
    app.add_middleware(
        PredictLane,
        answer=answer,
        route=next(r for r in app.routes if getattr(r, "endpoint", None) is predict),
        errors=lambda: app.exception_handlers[StarletteHTTPException],
        max_string_length=settings.max_string_length,
    )
    app.add_middleware(Traced)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if is_loopback(settings.gateway_host):  # elsewhere its public names are not known here
        app.add_middleware(HostCheck, bound=settings.gateway_host)
    app.add_middleware(Occupied, occupancy=occupancy)
    app.state.occupancy = occupancy
    return app
