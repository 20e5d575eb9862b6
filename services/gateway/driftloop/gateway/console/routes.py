"""The console's routes, mounted by the gateway's `create_app` at /ui. They read what the
gateway already serves (the model list and status, its bus) and the events stream; a control
goes to the deployer as the CLI's does, behind the gateway's own token check."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from driftloop.gateway.console import views
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.eventlog import CONTROL_ACTIONS, ask_deployer, follow_events, last_events
from driftloop.shared.permissions import MONITOR_VERSION
from driftloop.shared.registry import read_json_artifact, version_ref

logger = logging.getLogger(__name__)
TIMELINE = 200  # events per timeline page ("older" pages back)
PROFILE_ARTIFACT = "data/reference_profile.json"  # logged by the trainer with each run
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


class ControlRequest(BaseModel):
    """A person's command, as `driftloop approve|reject|pause|resume|promote|rollback` sends."""

    model_config = ConfigDict(extra="forbid")
    action: str = Field(description="one of " + ", ".join(CONTROL_ACTIONS))
    version: str | None = Field(default=None, max_length=64)
    to: str | None = Field(default=None, max_length=64, description="rollback: the version")
    reason: str | None = Field(default=None, max_length=500)
    actor: str | None = Field(default=None, max_length=100, description="who, for the audit")


def console_router(
    settings: Settings,
    *,
    models: Callable[[], Awaitable[dict[str, list[str]]]],
    status: Callable[[str], Awaitable[BaseModel]],
    bus: Callable[[], Bus],
    require_token: Callable[..., None],
    tokens_required: bool,
    route_class: type[APIRoute] = APIRoute,
) -> APIRouter:
    """The console's pages. `models` and `status` are the gateway's own GET /v1/models and
    GET /v1/models/{model}; `require_token` is its token check for writes."""
    router = APIRouter(prefix="/ui", route_class=route_class, include_in_schema=False)
    env = Environment(
        loader=PackageLoader("driftloop.gateway.console", "templates"),
        autoescape=select_autoescape(default=True),
    )
    row_template = env.get_template("_event.html")
    profiles: dict[tuple[str, str], dict[str, Any] | None] = {}

    def page(name: str, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(tokens_required=tokens_required, **context)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def profile(model: str, version: str | None) -> dict[str, Any] | None:
        """The reference profile of `version` (MLflow, read once per version)."""
        if version is None:
            return None
        if (model, version) not in profiles:

            def load() -> dict[str, Any] | None:
                from mlflow import MlflowClient

                client = MlflowClient(settings.tracking_uri())
                try:
                    ref = version_ref(client, model, version)
                    found = read_json_artifact(client, ref.run_id, PROFILE_ARTIFACT)
                except Exception:
                    logger.warning(
                        "no reference profile", extra={"model": model, "version": version}
                    )
                    return None
                return found if isinstance(found, dict) else None

            profiles[(model, version)] = await asyncio.to_thread(load)
        return profiles[(model, version)]

    async def live_stats(model: str, current: dict[str, Any]) -> list[dict[str, Any]]:
        """Each serving version's live stats per route and its metric on labelled traffic, as
        the monitor answers the deployer's analysis (none when it does not answer)."""
        serving = [
            (role, str(current[role]["version"]))
            for role in ("champion", "canary", "shadow")
            if current.get(role)
        ]

        async def ask(role: str, version: str) -> dict[str, Any]:
            try:
                answer = await bus().request(
                    MONITOR_VERSION, {"model": model, "version": version}, timeout=1.0
                )
            except Exception:  # the monitor is away: the rest of the page still shows
                answer = {}
            return {"routes": {}, "metric": None, **answer, "role": role, "version": version}

        return list(await asyncio.gather(*(ask(role, v) for role, v in serving)))

    @router.get("", response_class=RedirectResponse)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/models", status_code=303)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, f"no file {name!r}")
        body = resources.files("driftloop.gateway.console").joinpath("static", name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})

    @router.get("/models", response_class=HTMLResponse)
    async def model_list() -> HTMLResponse:
        names = (await models())["models"]
        found = await asyncio.gather(*(status(n) for n in names), return_exceptions=True)
        rows = [s.model_dump() for s in found if isinstance(s, BaseModel)]
        return page("models.html", models=rows)

    @router.get("/models/{model}", response_class=HTMLResponse)
    async def model_page(model: str, before: int | None = None) -> HTMLResponse:
        current = (await status(model)).model_dump()
        events, older = await last_events(bus(), model, limit=TIMELINE, before=before)
        monitor = current.get("monitor") or {}
        return page(
            "model.html",
            model=model,
            status=current,
            rows=[views.row(e) for e in reversed(events)],
            older=events[0].sequence if older and events else None,
            live=before is None,
            after=events[-1].sequence if events else 0,
            lineage=views.lineage(events),
            metric_svg=views.metric_chart(
                events, monitor.get("last_performance"), monitor.get("performance_history")
            ),
            versions=monitor.get("versions") or {},
            live_stats=await live_stats(model, current),
            actions=CONTROL_ACTIONS,
        )

    @router.get("/models/{model}/drift", response_class=HTMLResponse)
    async def drift_page(model: str) -> HTMLResponse:
        current = (await status(model)).model_dump()
        monitor = current.get("monitor") or {}
        last = monitor.get("last_drift") or {}
        reference = monitor.get("reference_version")
        charts = views.feature_charts(
            last.get("features") or {},
            await profile(model, str(reference) if reference is not None else None),
            last.get("counts") or {},
        )
        return page(
            "drift.html",
            model=model,
            status=current,
            last=last,
            monitor=monitor,
            charts=charts,
        )

    @router.get("/models/{model}/events")
    async def live(
        request: Request,
        model: str,
        after: int = 0,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse:
        """Server-sent events: each new event of the model as a timeline row (`entry`)."""
        if last_event_id and last_event_id.isdigit():  # a reconnecting EventSource
            after = max(after, int(last_event_id))

        async def entries() -> AsyncIterator[ServerSentEvent]:
            async for event in follow_events(bus(), model, after=after):
                html = row_template.render(row=views.row(event))
                yield ServerSentEvent(data=html, event="entry", id=str(event.sequence))

        return EventSourceResponse(entries(), ping=15)

    @router.post("/models/{model}/control", dependencies=[Depends(require_token)])
    async def control(
        model: str,
        body: ControlRequest,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """Carry out a person's command through the deployer (which checks the token again
        and writes the audit record, with `actor`)."""
        if body.action not in CONTROL_ACTIONS:
            raise HTTPException(422, f"unknown action {body.action!r}")
        token = authorization[7:].strip() if authorization else None
        actor = f"{body.actor.strip() or 'someone'} (console)" if body.actor else "console"
        try:
            answer = await ask_deployer(
                bus(),
                body.action,
                model,
                actor=actor,
                token=token,
                version=body.version or None,
                to=body.to or None,
                reason=body.reason or None,
            )
        except Exception as exc:  # no deployer answers (NoResponders, timeout)
            raise HTTPException(503, f"the deployer does not answer: {exc!r}") from exc
        if not answer.get("ok"):
            raise HTTPException(409, str(answer.get("error") or answer))
        logger.info(
            "console control",
            extra={"model": model, "action": body.action, "actor": actor},
        )
        return answer

    return router
