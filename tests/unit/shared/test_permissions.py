"""The NATS users: each service may publish its own events and nothing another owns, subscribe
only to replies and the requests it answers, and change no stream."""

from __future__ import annotations

from pathlib import Path

from driftloop.cli import client
from driftloop.deployer.adapters import observer
from driftloop.gateway import app
from driftloop.monitor import main as monitor
from driftloop.shared import bus, permissions
from driftloop.shared.events import DEPLOYER_CONTROL, EVENT_TYPES
from driftloop.shared.permissions import (
    ACCOUNTS,
    EMITS,
    RESPONDS,
    allowed,
    denied,
    inbox_prefix,
    render_conf,
    subscribable,
)
from driftloop.trainer.adapters import progress

ROOT = Path(__file__).resolve().parents[3]


def test_every_event_has_exactly_one_service_that_emits_it_besides_the_cli() -> None:
    owners = {
        event: [a for a in ACCOUNTS if a != "cli" and event in EMITS[a]] for event in EVENT_TYPES
    }

    assert {event: len(who) for event, who in owners.items()} == dict.fromkeys(EVENT_TYPES, 1)


def test_only_the_deployer_writes_routes_and_only_the_cli_writes_specs() -> None:
    routes = [a for a in ACCOUNTS if "$KV.driftloop_routes.>" in allowed(a)]
    specs = [a for a in ACCOUNTS if "$KV.driftloop_specs.>" in allowed(a)]

    assert routes == ["deployer"]
    assert specs == ["cli"]


def test_the_compose_configuration_is_the_rendered_one() -> None:
    committed = (ROOT / "deploy" / "nats.conf").read_text()

    assert committed == render_conf(), "regenerate deploy/nats.conf from permissions.py"
    assert "$DRIFTLOOP_NATS_PASSWORD_TRAINER" in committed


def test_passwords_are_quoted_into_the_embedded_configuration() -> None:
    conf = render_conf({a: f'pw-{a}"x' for a in ACCOUNTS})

    assert 'password: "pw-gateway\\"x"' in conf


def test_the_request_subjects_are_the_services_own() -> None:
    assert permissions.MONITOR_STATUS == monitor.STATUS_SUBJECT == app.MONITOR_STATUS
    assert permissions.MONITOR_VERSION == monitor.VERSION_SUBJECT == observer.VERSION_SUBJECT
    assert permissions.TRAINER_STATUS == progress.STATUS_SUBJECT == client.TRAINER_STATUS
    assert permissions.DEADLETTER_STREAM == bus.DEADLETTER_STREAM
    assert {s.name for s in bus.STREAMS} == set(permissions.STREAMS)


def test_only_the_responder_subscribes_to_a_request_subject() -> None:
    for owner, subjects in RESPONDS.items():
        for subject in subjects:
            assert [a for a in ACCOUNTS if subject in subscribable(a)] == [owner]
    assert [a for a in ACCOUNTS if DEPLOYER_CONTROL in subscribable(a)] == ["deployer"]
    for account in ACCOUNTS:  # its own inbox, and its own request subjects: no other wildcard
        assert subscribable(account)[0] == f"_INBOX.{account}.>"
        assert all(s.startswith("driftloop.rpc.") for s in subscribable(account)[1:])
        assert not [s for s in subscribable(account)[1:] if "*" in s or ">" in s]


def test_a_connection_takes_replies_in_the_inbox_its_user_may_read() -> None:
    for account in ACCOUNTS:
        prefix = inbox_prefix(f"nats://{account}:p%40ss@127.0.0.1:4222")
        assert prefix == f"_INBOX.{account}"
        assert f"{prefix}.x" not in {f"_INBOX.{a}.x" for a in ACCOUNTS if a != account}
    assert inbox_prefix("nats://127.0.0.1:4222") == "_INBOX"  # no users: NATS's default
    assert inbox_prefix("nats://someone:pw@127.0.0.1:4222") == "_INBOX"


def test_no_service_may_change_delete_or_purge_a_stream() -> None:
    for account in ACCOUNTS:
        assert {
            "$JS.API.STREAM.DELETE.>",
            "$JS.API.STREAM.PURGE.>",
            "$JS.API.STREAM.MSG.DELETE.>",
        } <= set(denied(account))
        if account != "cli":  # the administrator may upgrade the topology
            assert "$JS.API.STREAM.UPDATE.>" in denied(account)
            assert not [s for s in allowed(account) if s.startswith("$JS.API.>")]
            assert ">" not in allowed(account)
