"""`driftloop alerts ...`: check a model's alert destinations from this machine."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from driftloop.shared.config import Settings
from driftloop.shared.events import SPECS_BUCKET
from driftloop.shared.spec import ModelSpec

alerts_app = typer.Typer(
    no_args_is_help=True, help="Alerts: send a test message to a model's destinations."
)


@alerts_app.command("test")
def send_test(model: str) -> None:
    """Send a test alert to each destination of MODEL's spec (its URL from this process's
    DRIFTLOOP_ALERT_<NAME> variable); prints ok or failed with the reason for each, exits 1
    if any failed."""
    from driftloop.cli.main import _bus_call, fail, out, run_async, settings

    s = settings()

    async def read(bus: Any) -> ModelSpec | None:
        from nats.js.errors import KeyNotFoundError, NotFoundError

        try:
            entry = await (await bus.kv(SPECS_BUCKET)).get(model)
        except (KeyNotFoundError, NotFoundError):
            return None
        return ModelSpec.model_validate_json(entry.value) if entry.value else None

    spec = run_async(lambda: _bus_call(s, read))
    if spec is None:
        fail(f"no spec for model {model}: apply one with `driftloop apply FILE`")
        return
    if not spec.alerts:
        fail(f"the spec of {model} has no alerts (an `alerts:` list of destinations)")
    outcomes = asyncio.run(_send_all(s, spec))
    failed = 0
    for name, (ok, reason) in outcomes.items():
        if ok:
            out.print(f"{name}: ok")
        else:
            failed += 1
            out.print(f"{name}: failed: {reason}", soft_wrap=True, markup=False)
    if failed:
        raise typer.Exit(1)


async def _send_all(s: Settings, spec: ModelSpec) -> dict[str, tuple[bool, str]]:
    """Each destination's outcome, sent side by side (a dead one does not hold the others)."""
    from driftloop.monitor.adapters.notify import Sender
    from driftloop.monitor.domain.alerts import severity, trial_message

    sender = Sender(timeout=s.alerts_timeout)
    try:

        async def one(name: str) -> tuple[bool, str]:
            url = s.alert_urls.get(name)
            if url is None:
                return False, f"{name} is not set in this environment"
            message = trial_message(spec.model, name, console=s.console(spec.model))
            sent = await sender.send(url, message, severity=severity("AlertTest"))
            return sent.ok, sent.reason

        names = [d.url_env for d in spec.alerts]
        results = await asyncio.gather(*(one(name) for name in names))
        return dict(zip(names, results, strict=True))
    finally:
        sender.close()
