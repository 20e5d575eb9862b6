"""Access control of the gateway (Redis's protected mode is the model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from driftloop.gateway.app import InsecureBindError, create_app
from driftloop.shared.config import Settings

LABELS = {"labels": [{"id": "a", "label": 1}]}


def test_without_tokens_the_gateway_refuses_a_public_address(tmp_path: Path) -> None:
    with pytest.raises(InsecureBindError, match="DRIFTLOOP_API_TOKENS"):
        create_app(Settings(home=tmp_path, gateway_host="0.0.0.0"))


@pytest.mark.parametrize(
    "tokens", [" ", ",", " , ,", "\t"], ids=["space", "comma", "commas", "tab"]
)
def test_a_token_list_without_a_token_counts_as_none(tmp_path: Path, tokens: str) -> None:
    with pytest.raises(InsecureBindError, match="without DRIFTLOOP_API_TOKENS"):
        create_app(Settings(home=tmp_path, gateway_host="0.0.0.0", api_tokens=tokens))
    with pytest.raises(InsecureBindError, match="without DRIFTLOOP_API_TOKENS"):  # unvalidated
        create_app(
            Settings(home=tmp_path, gateway_host="0.0.0.0").model_copy(
                update={"api_tokens": tokens}
            )
        )


def test_with_tokens_a_public_address_is_allowed(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path, gateway_host="0.0.0.0", api_tokens="s3cret"))

    assert app.title == "driftloop gateway"


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong", 403),
        ("Basic s3cret", 401),
        ("Bearer s3cret", 404),  # past the gate: the model is unknown
        ("Bearer other", 404),
    ],
    ids=["no-token", "wrong-token", "wrong-scheme", "right-token", "second-token"],
)
def test_writes_need_one_of_the_configured_tokens(
    tmp_path: Path, header: str | None, status: int
) -> None:
    app = create_app(Settings(home=tmp_path, api_tokens="s3cret, other"))
    # No lifespan: the token check runs before any bus is needed. Addressed to loopback, as
    # the gateway on loopback requires (TestClient's default is "testserver").
    client = TestClient(app, base_url="http://127.0.0.1")

    resp = client.post(
        "/v1/models/churn/feedback",
        json=LABELS,
        headers={"Authorization": header} if header else {},
    )

    assert resp.status_code == status


@pytest.mark.parametrize(
    ("bound", "host", "status"),
    [
        ("127.0.0.1", "evil.example", 421),
        ("127.0.0.1", "127.0.0.1.evil.example:8000", 421),
        ("127.0.0.1", "localhost:8000", 404),
        ("127.0.0.1", "[::1]:8000", 404),
        ("localhost", "localhost.", 404),
        ("::1", "[::1]", 404),
        ("0.0.0.0", "evil.example", 404),  # not on loopback: its public names are unknown
    ],
    ids=["foreign", "lookalike", "localhost", "ipv6", "trailing-dot", "bound-ipv6", "public"],
)
def test_on_loopback_only_requests_addressed_to_a_loopback_name_are_answered(
    tmp_path: Path, bound: str, host: str, status: int
) -> None:
    app = create_app(Settings(home=tmp_path, gateway_host=bound, api_tokens="s3cret"))
    client = TestClient(app, base_url="http://127.0.0.1")

    resp = client.post(
        "/v1/models/churn/feedback",
        json=LABELS,
        headers={"Host": host, "Authorization": "Bearer s3cret"},
    )

    assert resp.status_code == status
    if status == 421:
        assert "DRIFTLOOP_GATEWAY_HOST" in resp.json()["detail"]
