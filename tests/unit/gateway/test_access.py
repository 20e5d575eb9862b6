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
    client = TestClient(app)  # no lifespan: the token check runs before any bus is needed

    resp = client.post(
        "/v1/models/churn/feedback",
        json=LABELS,
        headers={"Authorization": header} if header else {},
    )

    assert resp.status_code == status
