"""Alerts from the real monitor (nats-server, its database, apprise) to real HTTP receivers on
this machine: a JSON webhook (`json://`) and a Slack-shaped incoming webhook (apprise's
Mattermost plugin, `mmost://`: `{"text": ...}` to `/hooks/<token>`, the payload Slack's
incoming webhooks take; apprise's Slack plugin posts to hooks.slack.com only)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from helpers import eventually, invoke_cli
from monitoring import MODEL, T0, predict, start_monitor
from nats.js.errors import NotFoundError

from driftloop.monitor.adapters.alerts import of_model
from driftloop.monitor.main import serve as monitor
from driftloop.shared.bus import Bus
from driftloop.shared.config import Settings
from driftloop.shared.db import make_engine
from driftloop.shared.events import SPECS_BUCKET, ApprovalRequired, envelope, subject_for
from driftloop.shared.spec import parse_spec


class Receiver:
    """An HTTP endpoint on a free loopback port: answers 500 to its first `fail_first`
    requests, holds every request until the test ends when `hang`, else answers 200."""

    def __init__(self, *, fail_first: int = 0, hang: bool = False) -> None:
        self.fail_first = fail_first
        self.hang = hang
        self.arrived = 0
        self.accepted: list[tuple[str, dict[str, Any]]] = []  # (path, JSON body), answered 200
        self.release = threading.Event()
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    receiver.arrived += 1
                    refuse = receiver.arrived <= receiver.fail_first
                if receiver.hang:
                    receiver.release.wait(120)
                    return
                if not refuse:
                    with lock:
                        receiver.accepted.append((self.path, json.loads(body)))
                self.send_response(500 if refuse else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.stop()


def receiver(made: list[Receiver], **behaviour: Any) -> Receiver:
    made.append(Receiver(**behaviour))
    return made[-1]


def alert_rows(settings: Settings) -> list[dict[str, Any]]:
    """The monitor's alerts of the model ([] until the monitor has made its tables)."""
    engine = make_engine(settings.database_url_for("monitor"))
    try:
        with engine.connect() as conn:
            return of_model(conn, MODEL)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # not migrated yet
        return []
    finally:
        engine.dispose()


async def handled(bus: Bus, durable: str, messages: int) -> bool:
    """Whether the monitor's consumer `durable` has handled (acked) `messages` and no more wait."""
    try:
        info = await bus.js.consumer_info("DRIFTLOOP_EVENTS", durable)
    except NotFoundError:  # created in the background
        return False
    return bool(
        info.delivered.consumer_seq >= messages
        and info.num_pending == 0
        and not info.num_ack_pending
    )


async def start_alerting_monitor(
    settings: Settings, bus: Bus, running: Any, alerts_yaml: str, urls: dict[str, str]
) -> Settings:
    """The monitor with only a spec (no reference: the events here are read for alerts)."""
    spec = parse_spec(f"model: {MODEL}\ntarget: churned\nalerts:\n{alerts_yaml}")
    await (await bus.kv(SPECS_BUCKET)).put(MODEL, spec.to_json())
    alerting = settings.model_copy(update={"alert_urls": urls})
    running(monitor(alerting))
    return alerting


def approval(version: str = "7") -> ApprovalRequired:
    return ApprovalRequired(model=MODEL, cycle_id="c-42", version=version)


async def test_an_approval_reaches_a_json_webhook_and_a_slack_shaped_hook_with_the_command(
    settings: Settings, bus: Bus, running: Any, receivers: list[Receiver]
) -> None:
    hook, chat = receiver(receivers), receiver(receivers)
    await start_alerting_monitor(
        settings,
        bus,
        running,
        "  - url_env: DRIFTLOOP_ALERT_HOOK\n"
        "  - url_env: DRIFTLOOP_ALERT_CHAT\n    events: [ApprovalRequired]\n",
        {
            "DRIFTLOOP_ALERT_HOOK": f"json://127.0.0.1:{hook.port}/alerts",
            "DRIFTLOOP_ALERT_CHAT": f"mmost://127.0.0.1:{chat.port}/tok3n",
        },
    )

    await bus.publish(approval())

    await eventually(lambda: hook.accepted and chat.accepted, timeout=15)
    [(path, sent)] = hook.accepted
    assert path == "/alerts"
    assert "churn" in sent["title"]
    assert "version 7 waits for your approval" in sent["title"]
    assert "`driftloop approve churn 7`" in sent["message"]
    assert "/ui/models/churn" in sent["message"]
    [(chat_path, posted)] = chat.accepted
    assert chat_path == "/hooks/tok3n"  # a Slack-style incoming webhook: {"text": ...}
    assert "`driftloop approve churn 7`" in posted["text"]


async def test_a_destination_failing_then_recovering_gets_the_alert_once(
    settings: Settings, bus: Bus, running: Any, receivers: list[Receiver]
) -> None:
    flaky = receiver(receivers, fail_first=2)
    await start_alerting_monitor(
        settings,
        bus,
        running,
        "  - url_env: DRIFTLOOP_ALERT_FLAKY\n",
        {"DRIFTLOOP_ALERT_FLAKY": f"json://127.0.0.1:{flaky.port}/"},
    )

    await bus.publish(approval())

    async def sent() -> dict[str, Any] | None:
        rows = alert_rows(settings)
        return rows[0] if rows and rows[0]["sent_at"] is not None else None

    row = await eventually(sent, timeout=30)
    assert flaky.arrived == 3  # two 500s, then the one it took
    assert len(flaky.accepted) == 1
    assert row["attempts"] == 3
    assert len(alert_rows(settings)) == 1


async def test_a_dead_destination_does_not_delay_another(
    settings: Settings, bus: Bus, running: Any, receivers: list[Receiver]
) -> None:
    dead, live = receiver(receivers, hang=True), receiver(receivers)
    await start_alerting_monitor(
        settings.model_copy(update={"alerts_timeout": 60.0}),
        bus,
        running,
        "  - url_env: DRIFTLOOP_ALERT_DEAD\n  - url_env: DRIFTLOOP_ALERT_LIVE\n",
        {
            # read timeout 60 s: the dead one holds its send for the whole test
            "DRIFTLOOP_ALERT_DEAD": f"json://127.0.0.1:{dead.port}/?rto=60",
            "DRIFTLOOP_ALERT_LIVE": f"json://127.0.0.1:{live.port}/",
        },
    )

    await bus.publish(approval())

    await eventually(lambda: live.accepted, timeout=15)
    await eventually(lambda: dead.arrived == 1, timeout=15)  # sent side by side, not after
    assert not dead.accepted  # its send is still waiting for an answer

    def live_marked_sent() -> dict[str, Any] | None:  # marked once its send returned
        rows = {row["destination"]: row for row in alert_rows(settings)}
        return rows if rows["DRIFTLOOP_ALERT_LIVE"]["sent_at"] is not None else None

    rows = await eventually(live_marked_sent, timeout=15)
    assert rows["DRIFTLOOP_ALERT_DEAD"]["sent_at"] is None


async def test_the_same_event_delivered_twice_gives_one_alert(
    settings: Settings, bus: Bus, running: Any, receivers: list[Receiver]
) -> None:
    hook = receiver(receivers)
    await start_alerting_monitor(
        settings,
        bus,
        running,
        "  - url_env: DRIFTLOOP_ALERT_HOOK\n",
        {"DRIFTLOOP_ALERT_HOOK": f"json://127.0.0.1:{hook.port}/"},
    )
    event = approval()
    env = envelope(event, service="deployer")

    for copy in range(2):  # two messages (JetStream de-duplication bypassed), one event id
        await bus.js.publish(
            subject_for(event),
            env.model_dump_json().encode(),
            headers={"Nats-Msg-Id": f"{env.id}-{copy}"},
        )

    await eventually(lambda: handled(bus, "monitor-ApprovalRequired", 2), timeout=20)
    await eventually(lambda: hook.accepted, timeout=15)
    rows = alert_rows(settings)
    assert [(r["event_id"], r["destination"]) for r in rows] == [(env.id, "DRIFTLOOP_ALERT_HOOK")]
    await eventually(lambda: alert_rows(settings)[0]["sent_at"] is not None, timeout=10)
    assert len(hook.accepted) == 1


async def test_only_the_first_window_of_a_drift_episode_alerts_within_seconds(
    settings: Settings, bus: Bus, running: Any, receivers: list[Receiver]
) -> None:
    hook = receiver(receivers)
    alerting = settings.model_copy(
        update={"alert_urls": {"DRIFTLOOP_ALERT_HOOK": f"json://127.0.0.1:{hook.port}/"}}
    )
    await start_monitor(
        alerting,
        bus,
        running,
        "  window: 100\n  event_every: 1\n  cooldown: 1h\n",  # every drifted window reports
        more_yaml="alerts:\n  - url_env: DRIFTLOOP_ALERT_HOOK\n    events: [DriftDetected]\n",
    )
    rng = np.random.default_rng(5)

    for window in range(3):  # one drift episode of three windows: three DriftDetected
        await predict(bus, 100, T0 + timedelta(seconds=window), rng, scale=36.0)

    [(_, sent)] = await eventually(lambda: hook.accepted, timeout=20)
    assert "input drift" in sent["title"]
    assert "tenure: PSI" in sent["message"]

    await eventually(lambda: handled(bus, "monitor-DriftDetected", 3), timeout=30)
    assert [r["event_type"] for r in alert_rows(settings)] == ["DriftDetected"]
    assert len(hook.accepted) == 1


async def test_alerts_test_reports_each_destination_and_fails_if_one_failed(
    settings: Settings, bus: Bus, receivers: list[Receiver]
) -> None:
    hook = receiver(receivers)
    spec = parse_spec(
        f"model: {MODEL}\ntarget: churned\nalerts:\n"
        "  - url_env: DRIFTLOOP_ALERT_HOOK\n  - url_env: DRIFTLOOP_ALERT_BROKEN\n"
        "  - url_env: DRIFTLOOP_ALERT_UNSET\n"
    )
    await (await bus.kv(SPECS_BUCKET)).put(MODEL, spec.to_json())
    assert settings.nats_url is not None

    result = await asyncio.to_thread(  # the command runs its own event loop
        invoke_cli,
        settings.home,
        "alerts",
        "test",
        MODEL,
        DRIFTLOOP_NATS_URL=settings.nats_url,
        DRIFTLOOP_ALERT_HOOK=f"json://127.0.0.1:{hook.port}/",
        DRIFTLOOP_ALERT_BROKEN=f"json://127.0.0.1:{receiver(receivers, fail_first=9).port}/",
    )

    assert result.exit_code == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "DRIFTLOOP_ALERT_HOOK: ok" in lines
    assert any(
        line.startswith("DRIFTLOOP_ALERT_BROKEN: failed: ") and "500" in line for line in lines
    )
    assert (
        "DRIFTLOOP_ALERT_UNSET: failed: DRIFTLOOP_ALERT_UNSET is not set in this environment"
        in lines
    )
    [(_, sent)] = hook.accepted
    assert sent["title"] == "[driftloop] churn: test alert"
