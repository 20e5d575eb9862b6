"""docker-compose.yml: every service that checks bearer tokens gets them, from the environment
and with no default secret (without them it would accept every write or control request)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def token_checkers() -> list[str]:
    """The services whose code checks bearer tokens (`TokenSet`, shared/auth.py)."""
    return sorted(
        folder.name
        for folder in (ROOT / "services").iterdir()
        if any("TokenSet(" in path.read_text() for path in folder.rglob("*.py"))
    )


def test_the_services_that_check_tokens_are_the_gateway_and_the_deployer() -> None:
    assert token_checkers() == ["deployer", "gateway"]


def test_each_service_that_checks_tokens_gets_them_from_the_environment_without_a_default() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

    for name in token_checkers():
        value = services[name]["environment"].get("DRIFTLOOP_API_TOKENS")
        assert value == "${DRIFTLOOP_API_TOKENS:?set DRIFTLOOP_API_TOKENS}", name


def test_no_other_service_gets_the_tokens() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

    given = sorted(
        name
        for name, service in services.items()
        if "DRIFTLOOP_API_TOKENS" in (service.get("environment") or {})
    )
    assert given == token_checkers()
