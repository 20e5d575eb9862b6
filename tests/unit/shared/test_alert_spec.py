"""The spec's `alerts:` section: destinations by environment variable, the events each wants."""

from __future__ import annotations

import pytest

from driftloop.shared.config import Settings
from driftloop.shared.spec import DEFAULT_ALERT_EVENTS, SpecError, parse_spec

BASE = "model: churn\ntarget: churned\n"


def test_a_destination_defaults_to_every_alert_event_but_deployed() -> None:
    spec = parse_spec(BASE + "alerts:\n  - url_env: DRIFTLOOP_ALERT_SLACK\n")

    [destination] = spec.alerts
    assert destination.events == list(DEFAULT_ALERT_EVENTS)
    assert "Deployed" not in destination.events
    assert "ApprovalRequired" in destination.events


def test_no_alerts_section_means_no_alerts() -> None:
    assert parse_spec(BASE).alerts == []


@pytest.mark.parametrize(
    ("alerts", "error"),
    [
        (
            "  - url_env: https://hooks.slack.com/services/T/B/X\n",
            "alerts.0.url_env: give the name of an environment variable holding the URL",
        ),
        ("  - url_env: SLACK_URL\n", "alerts.0.url_env: 'SLACK_URL' is not an alert variable"),
        (
            "  - url_env: DRIFTLOOP_ALERT_A\n    events: [Drifted]\n",
            "alerts.0.events.0: Input should be 'DriftDetected'",
        ),
        (
            "  - url_env: DRIFTLOOP_ALERT_A\n    events: [RolledBack, RolledBack]\n",
            "alerts.0.events: RolledBack listed more than once",
        ),
        (
            "  - url_env: DRIFTLOOP_ALERT_A\n  - url_env: DRIFTLOOP_ALERT_A\n",
            "alerts: DRIFTLOOP_ALERT_A is a destination more than once",
        ),
        ("  - url_env: DRIFTLOOP_ALERT_A\n    events: []\n", "alerts.0.events"),
    ],
    ids=["a-url", "not-an-alert-variable", "unknown-event", "event-twice", "twice", "no-events"],
)
def test_a_wrong_alerts_section_is_refused_naming_the_field(alerts: str, error: str) -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec(BASE + "alerts:\n" + alerts)

    assert error in str(refused.value)


def test_alert_urls_come_from_the_environment_and_stay_out_of_dumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTLOOP_ALERT_SLACK", "slack://T/B/secret")

    settings = Settings()

    assert settings.alert_urls["DRIFTLOOP_ALERT_SLACK"] == "slack://T/B/secret"
    assert "secret" not in repr(settings)
    assert "secret" not in settings.model_dump_json()
    assert settings.console("churn") == f"{settings.gateway_url()}/ui/models/churn"
