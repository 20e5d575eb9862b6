"""NATS users and subject permissions on the embedded server: a connection needs a user, and
each service publishes only its own events (a trainer cannot announce a deployment)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import nats
import nats.errors
import pytest
from helpers import cli_env, run_cli

from driftloop.cli.supervisor import free_port
from driftloop.shared.permissions import ACCOUNTS

pytestmark = pytest.mark.e2e


class Embedded:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = cli_env(home, free_port(), DRIFTLOOP_NATS_AUTH="1")

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

    nc = await nats.connect(embedded.url(account), error_cb=on_error, max_reconnect_attempts=0)
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
        ("trainer", "driftloop.deadletter.permission-probe.trainer"),
    ],
)
async def test_each_service_publishes_what_it_owns(
    embedded: Embedded, account: str, subject: str
) -> None:
    assert await publish_as(embedded, account, subject) is None
