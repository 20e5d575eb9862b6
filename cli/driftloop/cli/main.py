"""The `driftloop` command: one entry point for running, feeding and watching the loop.

Exit codes: 0 success, 1 the request failed (reason on stderr), 2 usage error.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from driftloop.cli import supervisor
from driftloop.cli.client import (
    DeadLetter,
    Received,
    cancel_and_wait,
    follow_waits,
    read_log,
    trainer_waits,
    wait_for_cycle,
)
from driftloop.shared.config import SERVICES, Settings, redact
from driftloop.shared.estimators import EstimatorError, estimator_class
from driftloop.shared.eventlog import describe
from driftloop.shared.events import SPECS_BUCKET, RetrainRequested
from driftloop.shared.permissions import inbox_prefix
from driftloop.shared.spec import SpecError, parse_spec

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="driftloop keeps deployed models good: drift, retraining, evaluation, "
    "progressive delivery.",
)
out = Console()
# Messages are never cut into lines at a fixed width: a path or a name stays whole for a
# person to copy and for a script to grep (the terminal wraps what is too long for it).
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


class FailedError(Exception):
    """The request failed; the message goes to stderr and the exit code is 1."""


def settings() -> Settings:
    return Settings()


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except FailedError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


async def _connect(s: Settings) -> Any:
    from driftloop.shared.bus import connect_bus

    try:
        s.resolved_nats_url()
    except RuntimeError as exc:
        raise FailedError(str(exc)) from exc
    return connect_bus(s, service="cli")


async def _bus_call(s: Settings, body: Callable[[Any], Awaitable[T]]) -> T:
    import nats.errors

    try:
        async with await _connect(s) as bus:
            return await body(bus)
    except (nats.errors.NoServersError, OSError) as exc:
        raise FailedError(f"cannot reach NATS at {redact(s.resolved_nats_url())}: {exc}") from exc


# Life cycle --------------------------------------------------------------------------------


@app.command()
def up(
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="return once every service is ready")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for readiness")] = 180.0,
) -> None:
    """Start NATS (embedded unless DRIFTLOOP_NATS_URL is set) and the five services."""
    s = settings()
    if detach:
        _up_detached(s, timeout)
        return
    from driftloop.shared.telemetry import configure_logging

    configure_logging(s, service="supervisor")
    sup = supervisor.Supervisor(s)
    try:
        url = sup.prepare()
        as_cli = supervisor.with_user(url, "cli", sup.passwords)
        _initialise_stores(s.model_copy(update={"nats_url": as_cli}))
        sup.start_services(url)
    except (supervisor.SupervisorError, OSError) as exc:
        sup.shutdown()
        fail(str(exc))
    err.print(f"driftloop up: NATS {url}, gateway {s.gateway_url()} (Ctrl-C stops)")
    sup.watch()


def _initialise_stores(s: Settings) -> None:
    """Migrate every service's tables, create the MLflow store and the bus topology once,
    before the services start (and would race for them)."""
    import importlib

    from driftloop.shared.bus import connect_bus
    from driftloop.shared.db import make_engine, migrate
    from driftloop.shared.registry import configure_mlflow

    configure_mlflow(s).search_experiments(max_results=1)
    for name in SERVICES:
        if name == "gateway":
            continue  # the gateway keeps no tables
        store = importlib.import_module(f"driftloop.{name}.adapters.store")
        engine = make_engine(s.database_url_for(name))
        try:
            migrate(engine, service=name, versions=store.VERSIONS)
        finally:
            engine.dispose()

    async def topology() -> None:
        async with connect_bus(s, service="cli"):
            pass

    asyncio.run(topology())


def _up_detached(s: Settings, timeout: float) -> None:
    if supervisor.read_pid(s.run_dir / "supervisor.pid") is not None:
        fail(f"driftloop is already up under {s.home}; `driftloop down` stops it")
    s.log_dir.mkdir(parents=True, exist_ok=True)
    log = s.log_dir / "supervisor.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftloop.cli", "up"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "DRIFTLOOP_HOME": str(s.home)},
    )
    deadline = time.monotonic() + timeout
    with err.status("starting driftloop ...") as status:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                fail(f"driftloop up exited with {proc.returncode}; see {log}:\n" + _tail(log))
            states = _service_states(s)
            status.update("starting driftloop: " + ", ".join(f"{k} {v}" for k, v in states.items()))
            if all(v == "running" for v in states.values()):
                err.print(f"driftloop is up: gateway {s.gateway_url()}, home {s.home}")
                return
            time.sleep(0.5)
    supervisor.stop(s)
    fail(f"services not ready after {timeout:.0f}s; see the logs in {s.log_dir}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _service_states(s: Settings) -> dict[str, str]:
    states = dict.fromkeys(SERVICES, "down")
    try:
        url = s.resolved_nats_url()
    except RuntimeError:
        return states

    async def ping() -> None:
        import nats

        try:
            nc = await nats.connect(
                url,
                connect_timeout=1,
                max_reconnect_attempts=0,
                allow_reconnect=False,
                inbox_prefix=inbox_prefix(url),
            )
        except Exception:
            return
        try:
            for name in SERVICES:
                if name == "gateway":
                    continue
                try:
                    await nc.request(f"driftloop.rpc.ping.{name}", b"{}", timeout=0.5)
                    states[name] = "running"
                except Exception:
                    states[name] = "down"
        finally:
            await nc.close()

    asyncio.run(ping())
    try:
        ready = httpx.get(f"{s.gateway_url()}/readyz", timeout=1.0)
        states["gateway"] = "running" if ready.status_code == 200 else "starting"
    except httpx.HTTPError:
        states["gateway"] = "down"
    return states


@app.command()
def down(
    timeout: Annotated[float, typer.Option(help="seconds before a hard kill")] = 40.0,
) -> None:
    """Stop what `driftloop up` started, and return when it is gone."""
    s = settings()
    if supervisor.stop(s, timeout=timeout):
        err.print("driftloop is down")
    else:
        err.print(f"driftloop is not running under {s.home}")


@app.command("run")
def run_service(service: Annotated[str, typer.Argument(help="|".join(SERVICES))]) -> None:
    """Run one service in the foreground (what `up` supervises)."""
    if service not in SERVICES:
        err.print(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")
        raise typer.Exit(2)
    import importlib

    importlib.import_module(f"driftloop.{service}.main").main()


# Models ------------------------------------------------------------------------------------


@app.command()
def apply(file: Annotated[Path, typer.Argument(help="model spec (YAML)")]) -> None:
    """Validate a model spec and store it; the services pick it up at once."""
    try:
        spec = parse_spec(file.read_text())
        estimator_class(spec.recipe.estimator)  # imports it: an estimator class, not a name
    except OSError as exc:
        fail(f"{file}: {exc.strerror}")
        return
    except (SpecError, EstimatorError) as exc:
        fail(f"{file}: {exc}")
        return
    s = settings()

    async def put(bus: Any) -> None:
        kv = await bus.kv(SPECS_BUCKET)
        await kv.put(spec.model, spec.to_json())

    run_async(lambda: _bus_call(s, put))
    out.print(f"applied spec for model [bold]{spec.model}[/bold]")


@app.command()
def train(
    model: str,
    data: Annotated[Path, typer.Option("--data", help="CSV or Parquet training file")],
    no_wait: Annotated[bool, typer.Option("--no-wait")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the cycle")] = 1800,
) -> None:
    """Bootstrap a version from a file; waits for the cycle (exit 0 on Deployed)."""
    from driftloop.shared.registry import read_table

    s = settings()
    try:
        frame = read_table(data)
    except ValueError as exc:
        fail(str(exc))
        return
    spec = run_async(lambda: _bus_call(s, lambda bus: _spec(bus, model)))
    missing = [c for c in [spec.target, *(spec.features or [])] if c not in frame.columns]
    if missing:
        fail(f"{data}: missing column(s) {', '.join(missing)} named by the spec of {model}")
    uri = _upload(s, model, data)
    cycle = str(uuid.uuid4())
    event = RetrainRequested(
        model=model,
        cycle_id=cycle,
        trigger="bootstrap",
        reason=f"bootstrap from {data.name} ({len(frame)} rows)",
        data_uri=uri,
        requested_at=datetime.now(UTC),
    )
    _start_cycle(s, event, wait=not no_wait, timeout=timeout)


@app.command()
def retrain(
    model: str,
    no_wait: Annotated[bool, typer.Option("--no-wait")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the cycle")] = 1800,
) -> None:
    """Start a retraining cycle now (trigger: manual); waits for it to end."""
    s = settings()
    run_async(lambda: _bus_call(s, lambda bus: _spec(bus, model)))
    event = RetrainRequested(
        model=model,
        cycle_id=str(uuid.uuid4()),
        trigger="manual",
        reason="requested from the command line",
        requested_at=datetime.now(UTC),
    )
    _start_cycle(s, event, wait=not no_wait, timeout=timeout)


async def _spec(bus: Any, model: str) -> Any:
    from driftloop.shared.service import SpecSource

    spec = await SpecSource(bus).get(model)
    if spec is None:
        raise FailedError(f"unknown model {model!r}: apply its spec first (driftloop apply FILE)")
    return spec


def _upload(s: Settings, model: str, data: Path) -> str:
    """Put the training file into MLflow, where the trainer reads it from."""
    import mlflow

    from driftloop.shared.registry import configure_mlflow, experiment_id

    client = configure_mlflow(s)
    exp = experiment_id(client, s, model)
    with mlflow.start_run(
        experiment_id=exp,
        run_name=f"{model}-bootstrap-data",
        tags={"driftloop.kind": "bootstrap-data"},
    ) as run:
        mlflow.log_artifact(str(data), artifact_path="bootstrap")
        return f"{run.info.artifact_uri}/bootstrap/{data.name}"


def _start_cycle(s: Settings, event: RetrainRequested, *, wait: bool, timeout: float) -> None:
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    from driftloop.shared.telemetry import configure_tracing

    provider = configure_tracing(s, service="cli")
    tracer = trace.get_tracer("driftloop.cli")

    async def go(bus: Any) -> Received | None:
        with tracer.start_as_current_span(
            "retrain cycle",
            context=otel_context.Context(),
            attributes={"driftloop.cycle_id": event.cycle_id, "driftloop.model": event.model},
        ):
            await bus.publish(event)
        err.print(f"cycle {event.cycle_id} started ({event.trigger}) for {event.model}")
        if not wait:
            return None
        queue: asyncio.Queue[Received] = asyncio.Queue()
        printer = asyncio.create_task(_print_progress(queue))
        started = time.monotonic()
        waits = asyncio.create_task(
            follow_waits(
                bus,
                event.model,
                lambda wait: err.print(
                    f"  [{time.monotonic() - started:6.1f}s] {'trainer':<18} {wait['progress']}"
                ),
                cycle_id=event.cycle_id,
            )
        )
        try:
            return await wait_for_cycle(
                bus, event.model, event.cycle_id, queue=queue, timeout=timeout
            )
        except TimeoutError as exc:
            raise FailedError(f"cycle {event.cycle_id} did not end within {timeout:.0f}s") from exc
        finally:
            await cancel_and_wait(waits)
            await queue.join()
            printer.cancel()

    try:
        last = run_async(lambda: _bus_call(s, go))
    finally:
        provider.shutdown()
    if last is None:
        return
    if last.type != "Deployed":
        fail(f"cycle ended with {last.type}: {describe(last)}")
    out.print(f"[green]deployed[/green] {event.model} version {last.data.get('version')}")


async def _print_progress(queue: asyncio.Queue[Received]) -> None:
    started = time.monotonic()
    while True:
        received = await queue.get()
        err.print(
            f"  [{time.monotonic() - started:6.1f}s] {received.type:<18} {describe(received)}"
        )
        queue.task_done()


# Releases ------------------------------------------------------------------------------------


def _control(action: str, model: str, **fields: Any) -> None:
    """Ask the deployer to carry out a person's command; print the rollout it left."""
    import getpass

    s = settings()

    async def ask(bus: Any) -> dict[str, Any]:
        import nats.errors

        from driftloop.shared.eventlog import ask_deployer

        actor = os.environ.get("DRIFTLOOP_ACTOR") or getpass.getuser()
        try:
            answer = await ask_deployer(
                bus, action, model, actor=actor, token=s.api_token, **fields
            )
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            raise FailedError("the deployer does not answer: is `driftloop up` running?") from exc
        return answer

    answer = run_async(lambda: _bus_call(s, ask))
    if not answer.get("ok"):
        fail(str(answer.get("error") or answer))
    rollout = answer["rollout"]
    out.print(
        f"{model} version {rollout['version']}: {rollout['state']}"
        + (f" {rollout['weight']}%" if rollout["state"] == "canary" else "")
        + (" (paused)" if rollout.get("paused") else "")
        + (f" - {rollout['reason']}" if rollout.get("reason") else "")
    )


@app.command()
def approve(
    model: str,
    version: str,
    reject: Annotated[bool, typer.Option("--reject", help="end the rollout instead")] = False,
    reason: Annotated[str | None, typer.Option(help="recorded in the audit log")] = None,
) -> None:
    """Approve (or --reject) a rollout waiting in awaiting_approval."""
    _control("reject" if reject else "approve", model, version=version, reason=reason)


@app.command()
def rollback(
    model: str,
    to: Annotated[str | None, typer.Option("--to", help="the version to restore")] = None,
    reason: Annotated[str | None, typer.Option(help="recorded in the audit log")] = None,
) -> None:
    """End the running rollout, or with none running make an earlier version champion again
    (--to VERSION, default the champion before the current one)."""
    _control("rollback", model, to=to, reason=reason)


@app.command()
def promote(
    model: str,
    version: str,
    reason: Annotated[str | None, typer.Option(help="recorded in the audit log")] = None,
) -> None:
    """Make VERSION champion now: the running rollout's version skips its remaining steps,
    or with none running any registered version is released at once."""
    _control("promote", model, version=version, reason=reason)


@app.command()
def pause(
    model: str,
    reason: Annotated[str | None, typer.Option(help="recorded in the audit log")] = None,
) -> None:
    """Freeze the running rollout where it is: no step advances or rolls back by itself."""
    _control("pause", model, reason=reason)


@app.command()
def resume(
    model: str,
    reason: Annotated[str | None, typer.Option(help="recorded in the audit log")] = None,
) -> None:
    """Let a paused rollout's analysis go on."""
    _control("resume", model, reason=reason)


# Watching ----------------------------------------------------------------------------------


@app.command()
def status(
    model: Annotated[str | None, typer.Argument()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Services and models at a glance."""
    s = settings()
    states = _service_states(s)
    models: list[dict[str, Any]] = []
    if model:
        names = [model]
    elif all(state == "down" for state in states.values()):
        names = []  # nothing is up: report that, not an error
    else:
        names = sorted(run_async(lambda: _bus_call(s, _spec_names)))
    waiting = _trainer_waits(s, model) if names else []
    for name in names:
        try:
            resp = httpx.get(f"{s.gateway_url()}/v1/models/{name}", timeout=3.0)
        except httpx.HTTPError as exc:
            fail(f"gateway at {s.gateway_url()} unreachable: {exc}")
            return
        if resp.status_code == 404:
            fail(f"unknown model {name!r}")
        # what the trainer waits for: asked of the trainer here (the gateway does not ask it)
        found = resp.json()
        found["trainer"] = {"waiting": [w for w in waiting if w.get("model") == name]}
        models.append(found)
    if as_json:
        if model:
            out.print_json(data=models[0] if models else None)
        else:
            out.print_json(
                data={
                    "home": str(s.home),
                    "nats_url": _nats_url_or_none(s),
                    "gateway_url": s.gateway_url(),
                    "services": states,
                    "metrics": supervisor.metrics_urls(s),
                    "models": models,
                }
            )
        return
    out.print(f"home      {s.home}\nnats      {_nats_url_or_none(s)}\ngateway   {s.gateway_url()}")
    metrics = supervisor.metrics_urls(s)
    for name, state in states.items():
        colour = "green" if state == "running" else "red"
        where = f"  metrics {metrics[name]}" if metrics.get(name) else ""
        out.print(f"  {name:<10} [{colour}]{state}[/{colour}]{where}")
    for m in models:
        champion = (m.get("champion") or {}).get("version", "-")
        drift = m.get("last_drift") or {}
        mon = m.get("monitor") or {}
        out.print(
            f"[bold]{m['model']}[/bold] champion v{champion}  rollout "
            f"{(m.get('rollout') or {}).get('state', '-')}  last drift "
            f"{', '.join(drift.get('drifted_features', [])) or 'none'}  "
            f"window {mon.get('window_rows', 0)} rows"
        )
        for version, window in (mon.get("versions") or {}).items():
            judged = window.get("last_drift") or {}
            drifted = ", ".join(judged.get("drifted_features", [])) or "none"
            out.print(
                f"  version {version} window {window.get('window_rows', 0)} rows, last drift "
                f"{drifted if judged else '-'} (reference: version {window['reference_version']})"
            )
        perf = mon.get("last_performance")
        if perf:
            out.print(
                f"  live {perf['metric']} {perf['figure']:.4f} over {perf['labels']} labels "
                f"(version {perf['version']})"
            )
        verdict = m.get("last_verdict")
        if verdict:
            figures = ""
            if verdict.get("challenger_score") is not None:
                figures = f" {verdict['metric']} {verdict['challenger_score']:.4f}"
                if verdict.get("champion_score") is not None:
                    figures += f" vs {verdict['champion_score']:.4f}"
            out.print(
                f"  last verdict: version {verdict['version']} {verdict['verdict']}{figures}"
                f" ({verdict['reason']})"
            )
        lost = {k: n for k, n in (mon.get("records_discarded") or {}).items() if n}
        if lost:  # since the monitor started (docs/reliability.md, "Records discarded")
            out.print(
                "  [red]records discarded unread:[/red] "
                + ", ".join(f"{durable} {n}" for durable, n in sorted(lost.items()))
            )
        decision = mon.get("last_decision")
        if decision:
            out.print(
                f"  last decision: {'fired' if decision['fired'] else 'suppressed'} "
                f"({decision['reason']})"
            )
        for wait in (m.get("trainer") or {}).get("waiting", []):
            out.print(f"  training cycle {str(wait.get('cycle_id'))[:8]}: {wait.get('progress')}")


def _trainer_waits(s: Settings, model: str | None) -> list[dict[str, Any]]:
    """What the trainer waits for (of `model`, or every model's); nothing when it cannot be
    asked: the rest of the status still shows."""

    async def ask() -> list[dict[str, Any]]:
        try:
            return await _bus_call(s, lambda bus: trainer_waits(bus, model))
        except FailedError:
            return []

    return asyncio.run(ask())


def _nats_url_or_none(s: Settings) -> str | None:
    try:
        return redact(s.resolved_nats_url())
    except RuntimeError:
        return None


async def _spec_names(bus: Any) -> list[str]:
    from driftloop.shared.buckets import live_keys

    return await live_keys(bus.js, await bus.kv(SPECS_BUCKET), SPECS_BUCKET)


@app.command()
def events(
    model: Annotated[str | None, typer.Argument()] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The event history (the audit log) and the dead letters, in time order.

    --follow keeps printing as they arrive. --json prints one CloudEvent per line.

    A dead letter is a message a service gave up on, with its error. Its --json line is
    {"type": "DeadLetter", "subject", "model", "stream", "sequence", "durable", "deliveries",
    "error", "time", "data"}: "subject" is the NATS subject the message came on, "data" the
    message (JSON if it parses, else its text).
    """
    s = settings()

    async def show(bus: Any) -> None:
        async for received in read_log(bus, model, follow=follow):
            if isinstance(received, DeadLetter):
                show_dead_letter(received)
            elif as_json:
                print(json.dumps(received.envelope), flush=True)
            else:
                env = received.envelope
                cycle = received.data.get("cycle_id") or "-"
                out.print(
                    f"{env.get('time', '')[:19]}  {env.get('subject', ''):<12} "
                    f"{received.type:<18} cycle={str(cycle)[:8]}  {describe(received)}"
                )

    def show_dead_letter(letter: DeadLetter) -> None:
        if as_json:
            print(json.dumps(letter.as_json()), flush=True)
            return
        out.print(
            f"[red]{letter.time.isoformat()[:19]}  {letter.model:<12} {'DeadLetter':<18} "
            f"{letter.durable} gave up on {letter.subject} after {letter.deliveries} "
            f"deliveries: {escape(letter.error)}[/red]",
            highlight=False,
        )

    try:
        run_async(lambda: _bus_call(s, show))
    except KeyboardInterrupt:
        return


@app.command()
def lineage(
    model: str,
    version: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="re-materialise the training set and check its hash")
    ] = False,
) -> None:
    """Where a version came from: cycle, trigger, dataset, parent, recipe, metrics, verdict."""
    from mlflow.exceptions import MlflowException

    from driftloop.shared.registry import configure_mlflow

    s = settings()
    client = configure_mlflow(s)
    try:
        mv = client.get_model_version(model, version)
        run = client.get_run(str(mv.run_id))
    except MlflowException as exc:
        fail(f"no version {version} of model {model!r} in {s.tracking_uri()}: {exc.message}")
        return
    tags = run.data.tags
    doc = {
        "model": model,
        "version": version,
        "run_id": run.info.run_id,
        "cycle_id": tags.get("driftloop.cycle_id"),
        "trigger": tags.get("driftloop.trigger"),
        "reason": tags.get("driftloop.reason"),
        "parent_version": tags.get("driftloop.parent_version") or None,
        "dataset_version": tags.get("driftloop.dataset_version"),
        "labelled_until": tags.get("driftloop.labelled_until"),
        "features": json.loads(tags.get("driftloop.features", "[]")),
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "verdict": tags.get("driftloop.verdict"),
        "aliases": list(mv.aliases or []),
        "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
        "code_version": tags.get("driftloop.code_version"),
        "package_version": tags.get("driftloop.package_version"),
        "git_commit": tags.get("driftloop.git_commit"),
        "recipe": json.loads(tags.get("driftloop.recipe", "null")),
        "window": tags.get("driftloop.window"),
        "recent_since": tags.get("driftloop.recent_since"),
        "onset": tags.get("driftloop.onset"),
        "candidate": tags.get("driftloop.candidate"),
        "candidates": json.loads(tags["driftloop.candidates"])
        if tags.get("driftloop.candidates")
        else None,
        "cause_id": tags.get("driftloop.cause_id"),
        "dataset_uri": tags.get("driftloop.dataset_uri"),
        "artifact_sha256": (mv.tags or {}).get("driftloop.artifact_sha256"),
    }
    if verify:
        from driftloop.trainer.adapters.registry import DatasetMismatchError, materialise

        try:
            frame = materialise(client, model, version)
        except (DatasetMismatchError, MlflowException, OSError) as exc:
            fail(f"the training set of {model} version {version} does not re-materialise: {exc}")
            return
        doc["dataset_verified"] = f"{len(frame)} rows hash to {doc['dataset_version']}"
    if as_json:
        out.print_json(data=doc)
        return
    for key, value in doc.items():
        if key == "candidates" and isinstance(value, dict):
            value = _candidates_line(value)
        elif isinstance(value, dict):
            value = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()
            )
        out.print(f"{key:<16} {value}")


def _candidates_line(selection: dict[str, Any]) -> str:
    """The candidate training sets of a cycle with an onset, as `lineage` shows them."""
    metric = selection.get("metric")
    parts = []
    for c in selection.get("candidates") or []:
        figure = f"{metric} {c['score']:.4f}" if c.get("score") is not None else c.get("note")
        rows = f"{c.get('recent_rows')} post-onset + {c.get('older_rows')} older rows"
        parts.append(f"{c.get('name')}: {figure} ({rows})")
    validated = f"on {selection.get('validation_rows')} post-onset validation rows"
    return f"{'; '.join(parts) or selection.get('note')} [{validated}]"


@app.command("trace")
def trace_cmd(cycle_id: str) -> None:
    """The span tree of one retraining cycle (from the span files under HOME)."""
    from driftloop.shared.telemetry import read_spans

    s = settings()
    spans = read_spans(s.trace_dir)
    trace_ids = {
        sp["trace_id"]
        for sp in spans
        if sp.get("attributes", {}).get("driftloop.cycle_id") == cycle_id
    }
    if not trace_ids:
        fail(
            f"no spans of cycle {cycle_id} under {s.trace_dir} (with OTEL_EXPORTER_OTLP_"
            "ENDPOINT set, spans go to your collector instead)"
        )
    chosen = [sp for sp in spans if sp["trace_id"] in trace_ids]
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    ids = {sp["span_id"] for sp in chosen}
    for sp in chosen:
        parent = sp["parent_id"] if sp["parent_id"] in ids else None
        by_parent.setdefault(parent, []).append(sp)
    origin = min(sp["start"] for sp in chosen)

    def show(parent: str | None, depth: int) -> None:
        for sp in sorted(by_parent.get(parent, []), key=lambda x: x["start"]):
            ms = (sp["end"] - sp["start"]) / 1e6
            at = (sp["start"] - origin) / 1e6
            out.print(
                f"{'  ' * depth}{sp['name']:<{max(1, 40 - 2 * depth)}} "
                f"{sp.get('service', ''):<22} +{at:9.1f} ms {ms:9.1f} ms {sp['status']}"
            )
            show(sp["span_id"], depth + 1)

    out.print(f"trace {', '.join(sorted(trace_ids))} ({len(chosen)} spans)")
    show(None, 0)


@app.command()
def drift(
    reference: Annotated[Path, typer.Argument(help="reference CSV or Parquet file")],
    current: Annotated[Path, typer.Argument(help="current CSV or Parquet file")],
    spec_file: Annotated[
        Path | None,
        typer.Option("--spec", help="model spec: its features, target and PSI threshold"),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="column to leave out (default: the spec's)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="also write a self-contained HTML page")
    ] = None,
) -> None:
    """The monitor's drift report offline, from two files (exit 0 with or without drift)."""
    from driftloop.cli import report

    try:
        run = report.build_report(reference, current, spec_file=spec_file, target=target)
        if html is not None:
            report.write_html(run, html)
    except ValueError as exc:
        fail(str(exc))
        return
    if as_json:
        print(json.dumps(run.document, indent=2))
    else:
        report.print_table(run, out)
    if html is not None:
        err.print(f"wrote {html}")


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="leave driftloop running afterwards")] = False,
) -> None:
    """A whole cycle on synthetic data: first champion, drift, retraining, new champion."""
    from driftloop.cli.demo import run_demo

    code = run_demo(settings(), console=out, keep=keep)
    raise typer.Exit(code)


def main() -> None:
    app()


def _add_groups() -> None:
    from driftloop.cli.alerts import alerts_app

    app.add_typer(alerts_app, name="alerts")


_add_groups()
