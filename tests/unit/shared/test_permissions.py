"""The NATS users: each service may publish its own events and nothing another owns."""

from __future__ import annotations

from pathlib import Path

from driftloop.shared.events import EVENT_TYPES
from driftloop.shared.permissions import ACCOUNTS, EMITS, allowed, render_conf

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
