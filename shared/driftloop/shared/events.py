"""Every message on the bus: the events of the loop and the prediction/feedback records.

This module is the source of truth: the CloudEvents envelope, the subjects and
docs/asyncapi.json are generated from these classes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

EVENTS_STREAM = "DRIFTLOOP_EVENTS"
PREDICTIONS_STREAM = "DRIFTLOOP_PREDICTIONS"
FEEDBACK_STREAM = "DRIFTLOOP_FEEDBACK"
ROUTES_BUCKET = "driftloop_routes"
SPECS_BUCKET = "driftloop_specs"
DEPLOYER_CONTROL = "driftloop.rpc.deployer.control"  # approve/rollback/promote/pause
DEPLOYER_STATUS = "driftloop.rpc.deployer.status"

Trigger = Literal["drift", "performance", "schedule", "volume", "manual", "bootstrap"]


def prediction_subject(model: str, route: str) -> str:
    """Where a prediction record goes: `driftloop.predictions.<model>` for answers served
    (champion or canary), `driftloop.predictions.<model>.shadow` for a shadow's, so a consumer
    of served answers alone (the trainer, filtering `driftloop.predictions.*`) is never handed
    the shadow's copy of every request. Both are in the predictions stream."""
    base = f"driftloop.predictions.{model}"
    return f"{base}.shadow" if route == "shadow" else base


class Event(BaseModel):
    """Base of every event: frozen, no unknown fields, always names its model."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str = Field(examples=["churn"], description="the model this event is about")

    terminal: ClassVar[bool] = False  # ends a retraining cycle

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__


class CheckResult(BaseModel):
    """One check of a gate: its figure, threshold and outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    figure: float | None
    threshold: float | None
    passed: bool
    detail: str = ""


class FeatureDrift(BaseModel):
    """One feature of a drift window: `drifted` is PSI at or past `warn`; the other figures
    describe the shift (null where a statistic does not apply or the reference has no sample)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    feature: str
    kind: Literal["numeric", "categorical"]
    psi: float
    warn: float
    retrain: float
    drifted: bool
    missing: int = 0
    ks_statistic: float | None = Field(
        default=None, description="numeric: two-sample Kolmogorov-Smirnov statistic, in [0, 1]"
    )
    ks_pvalue: float | None = Field(default=None, description="numeric: its two-sided p-value")
    chi2_statistic: float | None = Field(
        default=None, description="categorical: Pearson chi-square statistic (window vs reference)"
    )
    chi2_pvalue: float | None = Field(default=None, description="categorical: its p-value")
    pvalue_adjusted: float | None = Field(
        default=None,
        description="the KS or chi-square p-value after Benjamini-Hochberg across the features",
    )
    jensen_shannon: float | None = Field(
        default=None, description="Jensen-Shannon distance (base 2, in [0, 1]) over the bins"
    )
    wasserstein: float | None = Field(
        default=None,
        description="numeric: 1-Wasserstein distance in reference standard deviations",
    )


class RetrainRequested(Event):
    """A retraining cycle starts: why, and which event caused it."""

    cycle_id: str
    trigger: Trigger
    reason: str
    cause_id: str | None = Field(default=None, description="id of the event that caused it")
    data_uri: str | None = Field(
        default=None, description="bootstrap only: MLflow artifact URI of the training file"
    )
    requested_at: datetime
    onset: datetime | None = Field(
        default=None,
        description="drift and performance triggers: when the change began (the start of the "
        "episode's first drifted or degraded window); the trainer trains on, and holds out, "
        "labelled rows served after it. Null for manual, schedule, volume and bootstrap",
    )
    attempt: int = Field(
        default=1,
        ge=1,
        description="which attempt at adapting to this episode (a retry after a failed cycle "
        "is 2, 3, ...)",
    )


class DriftDetected(Event):
    """A window of live inputs drifted from the reference beyond the warn threshold."""

    window_start: datetime
    window_end: datetime
    rows: int
    reference_version: str | None
    features: list[FeatureDrift]
    drifted_features: list[str]
    prediction: FeatureDrift | None = Field(
        default=None,
        description="the champion's predictions in the same window against its predictions on "
        "the reference rows (feature 'prediction'): reported, never a trigger; null when the "
        "reference profile has no predictions",
    )
    episode_start: datetime | None = Field(
        default=None,
        description="start of the first drifted window of this episode (drift that persists "
        "window after window is one episode, reported once and then every monitor.event_every "
        "windows)",
    )
    episode_windows: int = Field(
        default=1, ge=1, description="drifted windows in this episode so far, this one included"
    )


class PerformanceDegraded(Event):
    """The live metric on labelled traffic fell below the spec's floor."""

    window_start: datetime
    window_end: datetime
    metric: str
    figure: float
    threshold: float
    labels: int
    episode_start: datetime | None = Field(
        default=None,
        description="start of the first degraded window of this episode (reported once, then "
        "every monitor.event_every evaluations while it persists)",
    )
    episode_windows: int = Field(
        default=1, ge=1, description="degraded evaluations in this episode so far, this included"
    )


class DataRejected(Event):
    """The assembled training set failed validation; nothing was trained on it."""

    terminal: ClassVar[bool] = True
    cycle_id: str
    reason: str
    report: list[CheckResult] = Field(default_factory=list)


class TrainingFailed(Event):
    """Training could not produce a version (bad recipe, crash, too few labels in time)."""

    terminal: ClassVar[bool] = True
    cycle_id: str
    reason: str
    report: dict[str, Any] = Field(default_factory=dict)


class ModelTrained(Event):
    """The trainer registered a new model version for evaluation."""

    cycle_id: str
    version: str
    run_id: str = Field(description="MLflow run holding the holdout and dataset artifacts")
    dataset_version: str = Field(description="content hash of the training set")
    metrics: dict[str, float]
    trigger: Trigger


class _Verdict(Event):
    cycle_id: str
    version: str
    run_id: str
    champion_version: str | None
    metric: str
    challenger_score: float
    champion_score: float | None
    checks: list[CheckResult]
    reason: str


class EvaluationPassed(_Verdict):
    """The challenger passed every check against the champion on the same holdout."""

    champion_degraded: bool = Field(
        default=False,
        description="the champion was shown degraded on current data (a performance trigger, "
        "or a drift that measurably cost it) and the challenger passed as not worse: the "
        "deployer runs the canary's degraded_steps",
    )


class EvaluationFailed(_Verdict):
    """The challenger failed at least one check; the cycle ends here."""

    terminal: ClassVar[bool] = True


class RolloutAdvanced(Event):
    """The rollout moved to a new stage or weight."""

    cycle_id: str
    version: str
    stage: Literal["shadow", "awaiting_approval", "canary", "champion"]
    weight: int
    paused: bool = False
    by: str = Field(default="deployer", description="who moved it: the deployer or a person")
    reason: str = ""
    checks: list[CheckResult] = Field(
        default_factory=list, description="the analysis of the stage just passed"
    )


class ApprovalRequired(Event):
    """The rollout waits for `driftloop approve MODEL VERSION`."""

    cycle_id: str
    version: str


class Approved(Event):
    """A person approved the version's rollout."""

    cycle_id: str
    version: str
    by: str


class Deployed(Event):
    """The version is the champion and serves all traffic."""

    terminal: ClassVar[bool] = True
    cycle_id: str
    version: str
    previous_version: str | None
    run_id: str = Field(description="MLflow run of the new champion (its reference profile)")


class RolledBack(Event):
    """A rollout failed a check (or was rolled back by hand); the old champion serves."""

    terminal: ClassVar[bool] = True
    cycle_id: str
    version: str
    restored_version: str | None
    restored_run_id: str | None = Field(
        default=None, description="MLflow run of the restored champion (its reference profile)"
    )
    check: CheckResult | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    by: str = "deployer"
    reason: str = ""


class Attempt(BaseModel):
    """One failed attempt at adapting to an episode: its cycle and why it ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    cycle_id: str
    trigger: Trigger
    outcome: str = Field(description="the event that ended it (EvaluationFailed, ...)")
    reason: str
    at: datetime


class AdaptationStalled(Event):
    """A model stays drifted or below its performance floor after `monitor.stall_after`
    failed cycles in one episode: what was tried and why each attempt failed. Emitted once
    per episode at that count (the monitor keeps retrying as labels arrive)."""

    onset: datetime | None = Field(description="when the episode began")
    trigger: Trigger
    attempts: list[Attempt]
    metric: str | None = Field(default=None, description="the live metric, when known")
    figure: float | None = None
    threshold: float | None = None
    reason: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        RetrainRequested,
        DriftDetected,
        PerformanceDegraded,
        DataRejected,
        TrainingFailed,
        ModelTrained,
        EvaluationPassed,
        EvaluationFailed,
        RolloutAdvanced,
        ApprovalRequired,
        Approved,
        Deployed,
        RolledBack,
        AdaptationStalled,
    )
}
TERMINAL_TYPES = frozenset(name for name, cls in EVENT_TYPES.items() if cls.terminal)


# Records on the predictions and feedback streams -----------------------------------------


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    batch_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    model: str


class PredictionBatch(Record):
    """What one predict request did: the inputs, the answers, who answered and how fast."""

    version: str
    route: Literal["champion", "canary", "shadow"]
    ids: list[str]
    instances: list[dict[str, Any]]
    predictions: list[Any]
    latency_ms: float | None  # None: not timed on its own (a shadow's jobs answered together)
    at: datetime
    error: str | None = None
    # A record over the bus's max_payload is published in pieces of consecutive rows (the
    # gateway's domain/records.py): the same batch_id and fields, each row in one piece.
    part: int | None = Field(
        default=None, ge=0, description="this piece's index (0-based); null: the whole record"
    )
    parts: int | None = Field(
        default=None, ge=1, description="how many pieces the record was published in"
    )


class Label(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(min_length=1, max_length=256)
    label: Any


class FeedbackBatch(Record):
    """Delayed ground truth for earlier predictions, joined by prediction id."""

    labels: list[Label]
    at: datetime


# The CloudEvents envelope ----------------------------------------------------------------


class Envelope(BaseModel):
    """CloudEvents 1.0, structured JSON mode."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)
    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    time: datetime
    subject: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]


class UnknownEventError(ValueError):
    """The message is not an event this version of driftloop can read."""


def subject_for(event: Event) -> str:
    return f"driftloop.events.{event.model}.{event.event_type()}"


def envelope(
    event: Event, *, service: str, event_id: str | None = None, at: datetime | None = None
) -> Envelope:
    return Envelope(
        id=event_id or str(uuid.uuid4()),
        source=f"/services/{service}",
        type=event.event_type(),
        time=at or datetime.now(UTC),
        subject=event.model,
        data=event.model_dump(mode="json"),
    )


def parse_envelope(raw: bytes) -> tuple[Envelope, Event]:
    """Read a CloudEvent off the wire; raises UnknownEventError naming what is wrong."""
    try:
        env = Envelope.model_validate_json(raw)
    except ValidationError as exc:
        raise UnknownEventError(f"not a CloudEvent: {exc.errors()[0]['msg']}") from exc
    cls = EVENT_TYPES.get(env.type)
    if cls is None:
        raise UnknownEventError(f"unknown event type {env.type!r}")
    try:
        return env, cls.model_validate(env.data)
    except ValidationError as exc:
        raise UnknownEventError(f"bad {env.type} data: {exc}") from exc
