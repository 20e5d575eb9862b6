"""Events: the CloudEvents envelope round-trips every type; unreadable messages are refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from driftloop.shared.events import (
    EVENT_TYPES,
    TERMINAL_TYPES,
    AdaptationStalled,
    ApprovalRequired,
    Approved,
    Attempt,
    CheckResult,
    DataRejected,
    Deployed,
    DriftDetected,
    EvaluationFailed,
    EvaluationPassed,
    Event,
    FeatureDrift,
    ModelTrained,
    PerformanceDegraded,
    RetrainRequested,
    RolledBack,
    RolloutAdvanced,
    TrainingFailed,
    UnknownEventError,
    envelope,
    parse_envelope,
    subject_for,
)

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
CYCLE = "c-1"
CHECK = CheckResult(name="f1_delta", figure=0.01, threshold=0.0, passed=True)
VERDICT: dict[str, Any] = {
    "model": "churn",
    "cycle_id": CYCLE,
    "version": "2",
    "run_id": "run-2",
    "champion_version": "1",
    "metric": "f1",
    "challenger_score": 0.9,
    "champion_score": 0.89,
    "checks": [CHECK],
    "reason": "better",
}
SAMPLES: dict[str, Event] = {
    "RetrainRequested": RetrainRequested(
        model="churn",
        cycle_id=CYCLE,
        trigger="drift",
        reason="psi 0.3 on tenure",
        cause_id="e-1",
        requested_at=AT,
    ),
    "DriftDetected": DriftDetected(
        model="churn",
        window_start=AT,
        window_end=AT,
        rows=2000,
        reference_version="1",
        features=[
            FeatureDrift(
                feature="tenure", kind="numeric", psi=0.3, warn=0.2, retrain=0.25, drifted=True
            )
        ],
        drifted_features=["tenure"],
    ),
    "PerformanceDegraded": PerformanceDegraded(
        model="churn",
        window_start=AT,
        window_end=AT,
        metric="accuracy",
        figure=0.7,
        threshold=0.85,
        labels=300,
    ),
    "DataRejected": DataRejected(
        model="churn",
        cycle_id=CYCLE,
        reason="one class",
        report=[CheckResult(name="label_balance", figure=1.0, threshold=0.95, passed=False)],
    ),
    "TrainingFailed": TrainingFailed(
        model="churn",
        cycle_id=CYCLE,
        reason="no labels",
        report={"waited_s": 1800},
    ),
    "ModelTrained": ModelTrained(
        model="churn",
        cycle_id=CYCLE,
        version="2",
        run_id="run-2",
        dataset_version="sha256:ab",
        metrics={"f1": 0.9},
        trigger="drift",
    ),
    "EvaluationPassed": EvaluationPassed(**VERDICT),
    "EvaluationFailed": EvaluationFailed(**{**VERDICT, "reason": "worse"}),
    "RolloutAdvanced": RolloutAdvanced(
        model="churn",
        cycle_id=CYCLE,
        version="2",
        stage="canary",
        weight=10,
    ),
    "ApprovalRequired": ApprovalRequired(model="churn", cycle_id=CYCLE, version="2"),
    "Approved": Approved(model="churn", cycle_id=CYCLE, version="2", by="alice"),
    "Deployed": Deployed(
        model="churn",
        cycle_id=CYCLE,
        version="2",
        previous_version="1",
        run_id="run-2",
    ),
    "RolledBack": RolledBack(
        model="churn",
        cycle_id=CYCLE,
        version="2",
        restored_version="1",
        check=CheckResult(name="error_rate", figure=0.05, threshold=0.01, passed=False),
        reason="canary errors",
    ),
    "AdaptationStalled": AdaptationStalled(
        model="churn",
        onset=AT,
        trigger="performance",
        attempts=[
            Attempt(
                cycle_id=CYCLE,
                trigger="performance",
                outcome="EvaluationFailed",
                reason="f1_delta_lower_bound -0.03 vs threshold -0.01",
                at=AT,
            )
        ],
        metric="accuracy",
        figure=0.81,
        threshold=0.85,
        reason="accuracy below its floor after 3 failed attempts",
    ),
}


def _wire(**changes: Any) -> bytes:
    env = envelope(SAMPLES["Deployed"], service="deployer", event_id="e-9", at=AT)
    body = {**env.model_dump(mode="json"), **changes}
    return json.dumps(body).encode()


def test_samples_cover_every_event_type() -> None:
    names = set(SAMPLES)

    expected = set(EVENT_TYPES)

    assert names == expected


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_envelope_round_trips_every_event_type(name: str) -> None:
    event = SAMPLES[name]
    raw = envelope(event, service="x", event_id="e-1", at=AT).model_dump_json().encode()

    env, parsed = parse_envelope(raw)

    assert parsed == event
    assert type(parsed) is EVENT_TYPES[name]
    assert env.type == name
    assert env.id == "e-1"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_envelope_carries_the_cloudevents_attributes(name: str) -> None:
    event = SAMPLES[name]

    body = json.loads(envelope(event, service="x", at=AT).model_dump_json())

    assert body["specversion"] == "1.0"
    assert body["source"] == "/services/x"
    assert body["type"] == name
    assert body["subject"] == "churn"
    assert body["datacontenttype"] == "application/json"
    assert datetime.fromisoformat(body["time"]) == AT
    assert body["id"]
    assert body["data"]["model"] == "churn"


def test_events_of_a_cycle_carry_the_cycle_id_in_data() -> None:
    in_cycle = [name for name in SAMPLES if "cycle_id" in EVENT_TYPES[name].model_fields]

    data = {name: envelope(SAMPLES[name], service="x").data for name in in_cycle}

    assert set(in_cycle) == set(EVENT_TYPES) - {
        "DriftDetected",
        "PerformanceDegraded",
        "AdaptationStalled",
    }
    assert all(d["cycle_id"] == CYCLE for d in data.values())


def test_envelope_without_an_id_gets_a_fresh_one() -> None:
    event = SAMPLES["Approved"]

    ids = {envelope(event, service="x").id for _ in range(3)}

    assert len(ids) == 3


def test_subject_names_model_and_type() -> None:
    event = SAMPLES["ModelTrained"]

    subject = subject_for(event)

    assert subject == "driftloop.events.churn.ModelTrained"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (_wire(type="ModelExploded"), "unknown event type 'ModelExploded'"),
        (b"{not json", "not a CloudEvent"),
        (b"[]", "not a CloudEvent"),
        (_wire(specversion="0.3"), "not a CloudEvent"),
        (_wire(data={"model": "churn"}), "bad Deployed data"),
        (
            _wire(data={**SAMPLES["Deployed"].model_dump(mode="json"), "extra": 1}),
            "bad Deployed data",
        ),
        (_wire(type="RolledBack"), "bad RolledBack data"),
    ],
    ids=[
        "unknown-type",
        "bad-json",
        "not-an-object",
        "wrong-specversion",
        "data-missing-fields",
        "data-with-unknown-field",
        "data-of-another-type",
    ],
)
def test_unreadable_message_raises_unknown_event_error(raw: bytes, words: str) -> None:
    with pytest.raises(UnknownEventError) as caught:
        parse_envelope(raw)

    assert words in str(caught.value)


def test_terminal_types_are_the_ends_of_a_cycle() -> None:
    terminal = TERMINAL_TYPES

    expected = {"Deployed", "RolledBack", "EvaluationFailed", "DataRejected", "TrainingFailed"}

    assert terminal == expected
    assert EvaluationPassed.terminal is False


def test_events_are_frozen() -> None:
    event = Deployed(
        model="churn", cycle_id=CYCLE, version="2", previous_version="1", run_id="run-2"
    )

    with pytest.raises(ValidationError, match="frozen"):
        event.version = "3"  # type: ignore[misc]  # assigning is the point of the test

    assert event.version == "2"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_events_forbid_extra_fields(name: str) -> None:
    data = {**SAMPLES[name].model_dump(), "surprise": 1}

    with pytest.raises(ValidationError) as caught:
        EVENT_TYPES[name].model_validate(data)

    assert caught.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("RetrainRequested", "trigger", "boredom"),
        ("RolloutAdvanced", "stage", "production"),
    ],
    ids=["unknown-trigger", "unknown-stage"],
)
def test_closed_vocabularies_refuse_unknown_words(name: str, field: str, value: str) -> None:
    data = {**SAMPLES[name].model_dump(), field: value}

    with pytest.raises(ValidationError) as caught:
        EVENT_TYPES[name].model_validate(data)

    assert caught.value.errors()[0]["loc"] == (field,)
