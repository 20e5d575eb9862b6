"""NATS users and subject permissions on the embedded server: a connection needs a user; each
service publishes only its own events (a trainer cannot announce a deployment), subscribes only
to its replies and the requests it answers (nobody but the deployer reads a control request and
its token, nobody but the monitor answers its status), calls the JetStream API only for its own
consumers and buckets, and nobody changes, purges or deletes a stream or a message; the whole
loop runs all the same."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import nats
import nats.errors
import numpy as np
import pytest
from helpers import (
    SPEC,
    churn,
    cli_env,
    connect_nats,
    eventually,
    read_all_events,
    run_cli,
    types,
)

from driftloop.cli.supervisor import free_port
from driftloop.shared.bus import connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import (
    DEPLOYER_CONTROL,
    DEPLOYER_STATUS,
    EVENTS_STREAM,
    PREDICTIONS_STREAM,
)
from driftloop.shared.permissions import ACCOUNTS, MONITOR_STATUS, MONITOR_VERSION, TRAINER_STATUS

pytestmark = pytest.mark.e2e


class Embedded:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.env = cli_env(home, self.port, DRIFTLOOP_NATS_AUTH="1")

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.env, *args)

    def url(self, account: str | None) -> str:
        """The server's address, as `account` (None: no credentials)."""
        recorded = urlsplit((self.home / "run" / "nats.url").read_text().strip())
        bare = f"nats://{recorded.hostname}:{recorded.port}"
        if account is None:
            return bare
        conf = (self.home / "run" / "nats.conf").read_text()
        password = re.search(rf'user: "{account}"\s+password: "([^"]+)"', conf)
        assert password is not None, f"no user {account} in nats.conf"
        return f"nats://{account}:{quote(password.group(1))}@{recorded.hostname}:{recorded.port}"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    up = Embedded(tmp_path_factory.mktemp("perm") / "home")
    started = up("up", "--detach")
    assert started.returncode == 0, started.stderr
    yield up
    assert up("down").returncode == 0


def test_credentials_are_private_and_never_printed(embedded: Embedded) -> None:
    run = embedded.home / "run"
    status = embedded("status", "--json")

    assert (run / "nats.conf").stat().st_mode & 0o077 == 0
    assert (run / "nats.url").stat().st_mode & 0o077 == 0
    assert status.returncode == 0, status.stderr
    assert '"services"' in status.stdout
    conf = (run / "nats.conf").read_text()
    for password in re.findall(r'password: "([^"]+)"', conf):
        assert password not in status.stdout
    for name in ("supervisor", *ACCOUNTS[:-1]):
        log = embedded.home / "logs" / f"{name}.log"
        if log.exists():
            text = log.read_text()
            assert not any(p in text for p in re.findall(r'password: "([^"]+)"', conf))


async def test_a_connection_without_a_user_is_refused(embedded: Embedded) -> None:
    with pytest.raises((nats.errors.NoServersError, nats.errors.Error, OSError)):
        await nats.connect(
            embedded.url(None), allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2
        )


async def publish_as(embedded: Embedded, account: str, subject: str) -> str | None:
    """Publish to JetStream as `account`: None when acknowledged, else the server's refusal."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await connect_nats(embedded.url(account), error_cb=on_error, max_reconnect_attempts=0)
    try:
        try:
            await nc.jetstream().publish(subject, b"{}", timeout=2)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            await nc.flush()
            return " ".join(errors) or type(exc).__name__
        return None
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("account", "subject"),
    [
        ("trainer", "driftloop.events.churn.Deployed"),
        ("trainer", "driftloop.events.churn.RetrainRequested"),
        ("gateway", "driftloop.events.churn.ModelTrained"),
        ("evaluator", "$KV.driftloop_routes.churn"),
        ("monitor", "$KV.driftloop_specs.churn"),
        ("deployer", "driftloop.predictions.churn"),
        ("trainer", "driftloop.deadletter.churn.deployer-EvaluationPassed"),
    ],
)
async def test_a_service_cannot_publish_what_another_owns(
    embedded: Embedded, account: str, subject: str
) -> None:
    refused = await publish_as(embedded, account, subject)

    assert refused is not None
    assert f'permissions violation for publish to "{subject.lower()}"' in refused.lower()


@pytest.mark.parametrize(
    ("account", "subject"),
    [
        ("deployer", "$KV.driftloop_routes.permission-probe"),
        ("cli", "$KV.driftloop_specs.permission-probe"),
        ("gateway", "driftloop.feedback.permission-probe"),
        ("trainer", "driftloop.deadletter.permission-probe.trainer-RetrainRequested"),
        ("gateway", "driftloop.deadletter.permission-probe.gateway-records"),
    ],
)
async def test_each_service_publishes_what_it_owns(
    embedded: Embedded, account: str, subject: str
) -> None:
    assert await publish_as(embedded, account, subject) is None


class Probe:
    """A connection as one account that collects the server's refusals."""

    def __init__(self, embedded: Embedded, account: str) -> None:
        self.embedded = embedded
        self.account = account
        self.errors: list[str] = []
        self.nc: nats.NATS | None = None

    async def __aenter__(self) -> Probe:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        self.nc = await connect_nats(
            self.embedded.url(self.account),
            name="permission-probe",  # not a service's (see the_services_met_no_refusal)
            error_cb=on_error,
            max_reconnect_attempts=0,
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.nc is not None
        await self.nc.close()

    async def refused(self, what: str, subject: str) -> bool:
        """Whether the server refused `what` ("publish" or "subscription") on `subject`."""
        assert self.nc is not None
        expected = f'permissions violation for {what} to "{subject.lower()}"'

        async def said() -> bool:
            assert self.nc is not None
            await self.nc.flush()
            return any(expected in e for e in self.errors)

        try:
            return await eventually(said, timeout=3, interval=0.1)
        except AssertionError:
            return False


@pytest.mark.parametrize(
    ("account", "subject"),
    [
        ("monitor", DEPLOYER_CONTROL),  # a control request carries the person's token
        ("gateway", DEPLOYER_CONTROL),
        ("cli", DEPLOYER_CONTROL),
        ("trainer", "driftloop.rpc.deployer.*"),
        ("evaluator", "driftloop.rpc.>"),
        ("gateway", ">"),
        ("trainer", MONITOR_STATUS),  # the deployer's analysis trusts the monitor's answers
        ("deployer", MONITOR_VERSION),
        ("gateway", MONITOR_STATUS),
        ("monitor", TRAINER_STATUS),
        ("monitor", DEPLOYER_STATUS),
        ("deployer", "driftloop.rpc.ping.monitor"),
        ("trainer", "driftloop.events.>"),  # events are read through its own consumers
    ],
)
async def test_only_the_responder_may_subscribe_to_a_request_subject(
    embedded: Embedded, account: str, subject: str
) -> None:
    async with Probe(embedded, account) as probe:
        assert probe.nc is not None
        await probe.nc.subscribe(subject)

        assert await probe.refused("subscription", subject)


@pytest.mark.parametrize(
    ("account", "subject"),
    [
        ("gateway", "_INBOX.>"),  # every reply and every JetStream delivery
        ("monitor", "_INBOX.deployer.>"),  # the deployer's verdicts and the monitor's figures
        ("trainer", "_INBOX.*.>"),
        ("evaluator", "_INBOX.cli.>"),  # a person's status and control answers
        ("cli", "_INBOX.monitor.>"),
        ("deployer", "_INBOX.abc"),  # the default prefix: no account's
    ],
)
async def test_a_service_reads_replies_and_deliveries_only_in_its_own_inbox(
    embedded: Embedded, account: str, subject: str
) -> None:
    """Its own inbox (`_INBOX.<account>.>`) works: test_each_service_publishes_what_it_owns
    gets its acknowledgements there, and the whole loop runs on it."""
    async with Probe(embedded, account) as probe:
        assert probe.nc is not None
        await probe.nc.subscribe(subject)

        assert await probe.refused("subscription", subject)


ONE_DAY_NS = 86_400 * 10**9


@pytest.mark.parametrize(
    ("account", "subject", "body"),
    [
        # shorten the audit log's retention
        (
            "monitor",
            f"$JS.API.STREAM.UPDATE.{EVENTS_STREAM}",
            {"name": EVENTS_STREAM, "subjects": ["driftloop.events.>"], "max_age": ONE_DAY_NS},
        ),
        ("deployer", f"$JS.API.STREAM.UPDATE.{EVENTS_STREAM}", {"name": EVENTS_STREAM}),
        ("gateway", "$JS.API.STREAM.UPDATE.KV_driftloop_routes", {"name": "KV_driftloop_routes"}),
        ("monitor", f"$JS.API.STREAM.MSG.DELETE.{EVENTS_STREAM}", {"seq": 1}),
        ("cli", f"$JS.API.STREAM.MSG.DELETE.{EVENTS_STREAM}", {"seq": 1}),
        ("trainer", f"$JS.API.STREAM.PURGE.{EVENTS_STREAM}", {}),
        ("cli", f"$JS.API.STREAM.PURGE.{EVENTS_STREAM}", {}),
        ("evaluator", f"$JS.API.STREAM.DELETE.{EVENTS_STREAM}", {}),
        # another service's consumer: take (and ack away) the deployer's verdicts
        (
            "trainer",
            f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.deployer-EvaluationPassed",
            {"batch": 1},
        ),
        ("gateway", f"$JS.API.CONSUMER.DELETE.{EVENTS_STREAM}.monitor-Deployed", {}),
        # the console's ephemeral consumers: never another service's durable
        (
            "gateway",
            f"$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}.monitor-Deployed",
            {"stream_name": EVENTS_STREAM, "config": {"durable_name": "monitor-Deployed"}},
        ),
        ("evaluator", f"$JS.API.CONSUMER.INFO.{EVENTS_STREAM}.deployer-EvaluationPassed", {}),
    ],
)
async def test_no_service_changes_a_stream_or_uses_another_services_consumer(
    embedded: Embedded, account: str, subject: str, body: dict[str, object]
) -> None:
    async with Probe(embedded, account) as probe:
        assert probe.nc is not None
        answer = None
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            answer = await probe.nc.request(subject, json.dumps(body).encode(), timeout=2)

        assert answer is None
        assert await probe.refused("publish", subject)
    nc = await connect_nats(embedded.url("cli"))
    try:
        info = await nc.jetstream().stream_info(EVENTS_STREAM)
    finally:
        await nc.close()
    assert not info.config.max_age  # the audit log is kept


async def test_a_bound_set_by_the_administrator_is_kept_by_whoever_names_none(
    embedded: Embedded,
) -> None:
    """DRIFTLOOP_PREDICTIONS_MAX_BYTES given to one `driftloop` command (as to `up`) holds:
    a command from a shell without it leaves it, and a service started without it starts
    (before, the command put the default back, and the service stopped on its refused
    update)."""

    async def bound() -> int:
        nc = await connect_nats(embedded.url("cli"))
        try:
            return (await nc.jetstream().stream_info(PREDICTIONS_STREAM)).config.max_bytes
        finally:
            await nc.close()

    def status(**extra: str) -> None:
        done = run_cli(embedded.env | extra, "status", "--json")
        assert done.returncode == 0, done.stderr

    default = Settings().predictions_max_bytes
    status(DRIFTLOOP_PREDICTIONS_MAX_BYTES=str(64 * 2**20))
    try:
        assert await bound() == 64 * 2**20
        status()
        assert await bound() == 64 * 2**20
        for account in ("gateway", "evaluator"):  # one that reads no record stream
            plain = Settings(home=embedded.home, nats_url=embedded.url(account))
            async with connect_bus(plain, service=account):  # creates the topology: no error
                pass
        assert await bound() == 64 * 2**20
    finally:
        status(DRIFTLOOP_PREDICTIONS_MAX_BYTES=str(default))
    assert await bound() == default


async def test_the_whole_loop_runs_with_each_service_held_to_its_subjects(
    embedded: Embedded, tmp_path: Path
) -> None:
    """Apply, train (the bootstrap cycle through every service to Deployed), traffic and
    labels through the gateway, the model's status (the gateway asks the monitor and reads the
    last verdict), a person's command to the deployer, status and events through the CLI: all
    work, and the server refused no service anything."""
    (tmp_path / "churn.yaml").write_text(SPEC)
    churn(np.random.default_rng(3), 900).to_csv(tmp_path / "churn.csv", index=False)

    applied = embedded("apply", str(tmp_path / "churn.yaml"))
    trained = embedded("train", "churn", "--data", str(tmp_path / "churn.csv"))
    assert applied.returncode == 0, applied.stderr
    assert trained.returncode == 0, trained.stderr + trained.stdout
    assert "deployed churn version 1" in trained.stdout

    frame = churn(np.random.default_rng(4), 40)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{embedded.port}", timeout=30) as http:

        async def served() -> dict[str, Any] | None:
            resp = await http.post(
                "/v1/models/churn/predict",
                json={"instances": frame.drop(columns="churned").to_dict(orient="records")},
            )
            return resp.json() if resp.status_code == 200 else None  # routes not seen yet

        body = await eventually(served, timeout=30)
        labels = [
            {"id": k, "label": int(y)} for k, y in zip(body["ids"], frame["churned"], strict=True)
        ]
        fed = await http.post("/v1/models/churn/feedback", json={"labels": labels})
        assert fed.status_code == 202, fed.text

        async def monitored() -> dict[str, Any] | None:
            doc = (await http.get("/v1/models/churn")).json()
            seen = (doc.get("monitor") or {}).get("rows_seen") or 0
            return doc if seen >= len(frame) and doc.get("last_verdict") else None

        model = await eventually(monitored, timeout=60)
    assert model["last_verdict"]["verdict"] == "passed"

    commanded = embedded("pause", "churn", "--reason", "permission probe")
    assert "does not answer" not in commanded.stderr  # answered, whatever the answer
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{embedded.port}", timeout=30) as http:
        timeline = await http.get("/ui/models/churn")  # the console reads the events stream
        console_command = await http.post("/ui/models/churn/control", json={"action": "resume"})
    assert timeline.status_code == 200, timeline.text
    assert "Deployed" in timeline.text
    assert "does not answer" not in console_command.text, console_command.text
    status = json.loads(embedded("status", "--json").stdout)
    assert status["models"][0]["champion"]["version"] == "1"
    history = embedded("events", "churn")
    assert history.returncode == 0, history.stderr
    assert "Deployed" in history.stdout
    events = await read_all_events(embedded.url("cli"), "churn")
    assert types(events)[-1] == "Deployed"
    refusals = [
        line
        for line in (embedded.home / "logs" / "nats.log").read_text().splitlines()
        if "Violation" in line and ":driftloop-" in line  # a service's or the CLI's connection
    ]
    assert refusals == []
