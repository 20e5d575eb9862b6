"""The model spec users apply with `driftloop apply FILE`: every field has a default."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from driftloop.shared.config import ALERT_ENV_PREFIX
from driftloop.shared.estimators import estimator_name_problem

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """`30s`, `10m`, `7d` (also ms, h) into a timedelta; numbers are seconds. A duration is
    never negative, and at most about 2.7 million years (timedelta's own bound)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 30s, 10m or 7d")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds >= 0:  # also NaN
        raise ValueError(f"{value!r} is not a duration: it must not be negative")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{value!r} is too long a duration") from None


def format_duration(value: timedelta) -> str:
    """The inverse of parse_duration, so a spec read back from JSON parses again."""
    seconds = value.total_seconds()
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds}s"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Recipe(_Part):
    estimator: str = Field(
        default="sklearn.ensemble.HistGradientBoostingClassifier",
        description="dotted path of a scikit-learn estimator class of an allowed module "
        "(driftloop.shared.estimators.ESTIMATOR_MODULES)",
    )
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _an_allowed_estimator_class(cls, value: str) -> str:
        problem = estimator_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class DriftPolicy(_Part):
    psi_warn: float = Field(default=0.2, ge=0)
    psi_retrain: float = Field(default=0.25, ge=0)
    min_features: int = Field(default=1, ge=1)


class PerformancePolicy(_Part):
    """Retrain when the live metric on the champion's labelled traffic is worse than `min`
    (for rmse and mae, lower is better: `min` is then the worst acceptable value). Without
    `min` the trigger is off; the live metric is still computed and shown."""

    metric: Literal["accuracy", "f1", "precision", "recall", "rmse", "mae", "r2"] = Field(
        default="accuracy", description="default: accuracy (classification) or rmse (regression)"
    )
    min: float | None = Field(default=None, description="the floor; unset: trigger off")
    min_labels: int = Field(default=200, ge=1, description="labels per evaluation window")


class MonitorSpec(_Part):
    window: int = Field(default=2000, ge=10, description="predicted rows per drift window")
    window_time: Duration | None = Field(
        default=None,
        gt=timedelta(0),
        description="a drift window also closes once this long has passed since its first "
        "row, whichever of `window` rows and this comes first; unset: by rows only",
    )
    window_min_rows: int = Field(
        default=100,
        ge=1,
        description="fewest rows a window closed by `window_time` is judged on; a smaller one "
        "stays open until it has them",
    )
    keep_samples: int = Field(
        default=1_000_000,
        ge=1000,
        description="served answers kept per model (newest first) to join with their labels "
        "for the live metric and the deployer's analysis; older ones are deleted, so cover "
        "traffic rate x label delay",
    )
    keep_samples_for: Duration = Field(
        default=timedelta(days=7),
        gt=timedelta(0),
        description="and none older than this, labelled or not",
    )
    drift: DriftPolicy = DriftPolicy()
    performance: PerformancePolicy = PerformancePolicy()
    schedule: Duration | None = Field(
        default=None, description="retrain when this long has passed since the last one"
    )
    min_new_labels: int | None = Field(
        default=None,
        ge=1,
        description="data-volume trigger: retrain once this many new labelled rows arrived "
        "since the last retraining; unset: off",
    )
    cooldown: Duration = timedelta(minutes=10)
    retry_labels: int = Field(
        default=1000,
        ge=1,
        description="after a failed cycle while its trigger persists, the next attempt comes "
        "once this many labels arrived since the failed one started, doubling with each failed "
        "attempt of the episode (the time cooldown is not waited for); a deploy starts the "
        "cooldown as before",
    )
    stall_after: int = Field(
        default=3,
        ge=1,
        description="failed attempts in one episode before AdaptationStalled is emitted",
    )
    event_every: int = Field(
        default=10,
        ge=1,
        description="a persisting episode emits DriftDetected/PerformanceDegraded on its first "
        "window and then every this many windows",
    )


Candidate = Literal["recent", "recent+reference", "weighted"]
CANDIDATES: tuple[Candidate, ...] = ("recent", "recent+reference", "weighted")


class TrainerSpec(_Part):
    max_rows: int = Field(
        default=50_000,
        ge=10,
        description="most rows in a retraining set (the first version learns from its whole file)",
    )
    min_rows: int = Field(default=500, ge=1)
    holdout: float = Field(default=0.2, gt=0, lt=1)
    label_wait: Duration = Field(
        default=timedelta(minutes=30),
        description="how long a retraining waits for its labels (min_rows new ones, or the "
        "post-onset rows onset_holdout_rows asks for) before TrainingFailed",
    )
    seed: int = 0
    window: Duration | None = Field(
        default=None,
        gt=timedelta(0),
        description="recent rows are labelled within this long before the training (and after "
        "the champion's training set); unset: the newest max_rows rows, however old",
    )
    deduplicate: bool = Field(
        default=True,
        description="drop rows that exactly repeat an earlier one (features and label) from a "
        "retraining set; turn off when rows legitimately repeat (few categorical features). "
        "The first version's file is taken as given",
    )
    time_limit: Duration = Field(
        default=timedelta(minutes=10),
        gt=timedelta(0),
        description="longest a training may run (in a worker process) before TrainingFailed",
    )
    onset_holdout_rows: int = Field(
        default=500,
        ge=10,
        description="a drift- or performance-triggered cycle waits (up to label_wait) for "
        "ceil(onset_holdout_rows / holdout) labelled rows served after the onset (2500 with the "
        "defaults), so the holdout the evaluator judges on is this many post-onset rows "
        "(docs/evaluation.md)",
    )
    candidates: list[Candidate] = Field(
        default_factory=lambda: list(CANDIDATES),
        min_length=1,
        description="training sets tried on a cycle with an onset: post-onset rows only, "
        "post-onset plus older rows, or both with post-onset rows weighted up; the one that "
        "validates best on post-onset rows is kept (recorded in the lineage)",
    )


class SliceSpec(_Part):
    """A slice of the holdout judged on its own: each value of a categorical column, or bins
    of a numeric one (`bins`: increasing cut points, or a count of quantile bins; unset: 4)."""

    column: str = Field(min_length=1)
    bins: list[float] | Annotated[int, Field(ge=2, le=100)] | None = None

    @model_validator(mode="after")
    def _edges_increase(self) -> SliceSpec:
        edges = self.bins
        if isinstance(edges, list) and (
            not edges or any(edges[i + 1] <= edges[i] for i in range(len(edges) - 1))
        ):
            raise ValueError(f"bins must be increasing cut points, got {edges}")
        return self


class EvaluatorSpec(_Part):
    """How a challenger is judged against the champion on its holdout (docs/evaluation.md).

    Improvement d = challenger - champion in `metric` (champion - challenger for rmse, mae):
    its point estimate must reach `min_delta`, and its one-sided lower confidence bound at
    `confidence` must reach `min_delta - non_inferiority`. When the champion is shown degraded
    (a performance trigger; a drift trigger whose champion scores measurably worse after the
    drift than when it was trained), non-inferiority instead: d at least min(min_delta, 0) and
    its lower bound at least -degraded_margin."""

    metric: Literal["accuracy", "f1", "precision", "recall", "roc_auc", "rmse", "mae", "r2"] = (
        Field(default="f1", description="default: f1 (classification) or rmse (regression)")
    )
    min_delta: float = Field(
        default=0.0,
        description="least improvement of the metric on the holdout (point estimate); "
        "negative tolerates a small loss",
    )
    min_score: float | None = Field(
        default=None, description="absolute floor of the metric (the first version's only bar)"
    )
    max_p95_ms: float = Field(default=50.0, gt=0)
    confidence: float = Field(default=0.95, ge=0.5, lt=1, description="one-sided confidence")
    non_inferiority: float = Field(
        default=0.0,
        ge=0,
        description="how far below min_delta the lower confidence bound may fall; 0 with "
        "min_delta 0: the challenger must be better at the confidence",
    )
    uncertainty: Literal["bootstrap", "mcnemar"] = Field(
        default="bootstrap",
        description="paired bootstrap of the difference, or McNemar's exact test (accuracy)",
    )
    bootstrap: int = Field(default=1000, ge=100, le=100_000, description="resamples")
    seed: int = 0
    slices: list[SliceSpec] = Field(default_factory=list)
    slice_tolerance: float = Field(
        default=0.05, ge=0, description="largest metric drop of any slice vs the champion"
    )
    min_slice_rows: int = Field(
        default=50, ge=1, description="smaller slices are reported, not judged"
    )
    degraded_margin: float = Field(
        default=0.01,
        ge=0,
        description="cycles whose champion is shown degraded (a performance trigger, or a "
        "drift trigger whose champion scores measurably worse than when it was trained): "
        "the challenger passes when it is not worse on post-onset rows, its improvement's "
        "lower confidence bound at least -degraded_margin (non-inferiority); other triggers "
        "keep min_delta and non_inferiority",
    )

    @model_validator(mode="after")
    def _mcnemar_tests_accuracy(self) -> EvaluatorSpec:
        if self.uncertainty == "mcnemar" and self.metric != "accuracy":
            raise ValueError(f"uncertainty mcnemar tests accuracy, not {self.metric}")
        return self


class ShadowSpec(_Part):
    rows: int = Field(default=500, ge=0, description="mirrored rows before the canary; 0 skips")


class CanarySpec(_Part):
    """Steps of the canary and the bounds every analysed stage (shadow and each step) must
    keep, the challenger's live figures against the champion's over the same period."""

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 50, 100],
        description="canary weights in percent, increasing; [] promotes right after shadow",
    )
    rows_per_step: int = Field(default=500, ge=1)
    degraded_steps: list[Annotated[int, Field(ge=1, le=100)]] | None = Field(
        default=None,
        description="the steps instead when the champion was shown degraded (the evaluation "
        "passed the challenger as not worse than a champion known to be losing); each step "
        "still needs rows_per_step rows within every bound, so the challenger answers as many "
        "rows per step before it is judged, and the degraded champion serves fewer. Unset: "
        "`steps` from 50 % on (their last one if all are lower): [10, 50, 100] -> [50, 100], "
        "[] stays []; set it to `steps` to keep them",
    )
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_metric_drop: float = Field(default=0.02, ge=0)
    metric_confidence: float | None = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="how sure a step must be before its metric moves it: rolled back once the "
        "drop exceeds max_metric_drop with this (one-sided) confidence, passed once it is "
        "below it so; in between the step holds its weight for more labels, up to "
        "monitor.window labelled rows of the step, then the point estimates decide. null: "
        "the point estimates decide at once (a 0.02 drop is within noise on a few hundred "
        "labels, so a better challenger was rolled back about one time in four)",
    )
    min_labels: int = Field(
        default=50, ge=1, description="labelled rows of a stage before its metric is compared"
    )
    label_wait: Duration = Field(
        default=timedelta(seconds=60),
        description="how long a canary step that answered its rows waits for their labels "
        "before it is judged without the metric",
    )
    max_latency_ratio: float = Field(
        default=3.0,
        gt=0,
        description="challenger p95 latency at most this many times the champion's",
    )
    max_disagreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="share of rows answered unlike the champion; unset: off",
    )

    @model_validator(mode="after")
    def _steps_increase(self) -> CanarySpec:
        for name, steps in (("steps", self.steps), ("degraded_steps", self.degraded_steps or [])):
            if any(b <= a for a, b in itertools.pairwise(steps)):
                raise ValueError(f"{name} must increase, got {steps}")
        return self


class DeployerSpec(_Part):
    shadow: ShadowSpec = ShadowSpec()
    canary: CanarySpec = CanarySpec()
    approval: Literal["auto", "manual"] = "auto"
    approval_timeout: Duration = Field(
        default=timedelta(hours=24),
        description="how long a manual approval is awaited before the rollout is rolled back",
    )
    progress_deadline: Duration | None = Field(
        default=timedelta(hours=1),
        gt=timedelta(0),
        description="longest a shadow or canary stage may go without progress (passing to its "
        "next step, or failing) from the moment it began or was resumed; past it, "
        "`progress_deadline_action`. A stage that reached its rows is also given its "
        "canary.label_wait. A step is counted in rows, so keep it above the slowest healthy "
        "step: rows_per_step / (weight x rows per second) + label_wait (the default 1h: the "
        "default 10 % step at 1.4 rows/s). null: off",
    )
    progress_deadline_action: Literal["rollback", "pause"] = Field(
        default="rollback",
        description="past progress_deadline: roll back (RolledBack, check progress_deadline), "
        "or pause (RolloutAdvanced paused: the routes stay until a person resumes, promotes "
        "or rolls back; the clock restarts on resume)",
    )


AlertEvent = Literal[
    "DriftDetected",
    "PerformanceDegraded",
    "EvaluationFailed",
    "DataRejected",
    "TrainingFailed",
    "RolledBack",
    "ApprovalRequired",
    "AdaptationStalled",
    "Deployed",
]
ALERT_EVENTS: tuple[AlertEvent, ...] = get_args(AlertEvent)
# Everything that asks a person to look or act; Deployed (good news) only when asked for.
DEFAULT_ALERT_EVENTS: tuple[AlertEvent, ...] = tuple(e for e in ALERT_EVENTS if e != "Deployed")
_ALERT_ENV = re.compile(r"^DRIFTLOOP_ALERT_[A-Z0-9_]+$")


class AlertDestination(_Part):
    """Where the monitor sends a model's alerts: an apprise URL (Slack, e-mail, a JSON
    webhook, ...) read from the monitor's environment variable `url_env`, never written in the
    spec (it holds the secret), and the events it wants."""

    url_env: str = Field(
        description="name of the environment variable holding the apprise URL, "
        "DRIFTLOOP_ALERT_<NAME> (e.g. DRIFTLOOP_ALERT_SLACK)",
        examples=["DRIFTLOOP_ALERT_SLACK"],
    )
    events: list[AlertEvent] = Field(
        default_factory=lambda: list(DEFAULT_ALERT_EVENTS),
        min_length=1,
        description="the events sent here; DriftDetected and PerformanceDegraded alert on the "
        "first window of an episode only. Default: all but Deployed",
    )

    @field_validator("url_env", mode="before")
    @classmethod
    def _an_alert_variable(cls, value: Any) -> Any:
        if isinstance(value, str) and "://" in value:
            raise ValueError(
                "give the name of an environment variable holding the URL, not the URL (it "
                "carries a secret): url_env: DRIFTLOOP_ALERT_<NAME>"
            )
        if not isinstance(value, str) or not _ALERT_ENV.match(value):
            raise ValueError(
                f"{value!r} is not an alert variable: the name of an environment variable "
                f"{ALERT_ENV_PREFIX}<NAME> (capitals, digits, _) holding an apprise URL"
            )
        return value

    @field_validator("events")
    @classmethod
    def _each_event_once(cls, value: list[str]) -> list[str]:
        repeated = sorted({e for e in value if value.count(e) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed more than once")
        return value


class ModelSpec(_Part):
    """One model under driftloop's care."""

    model: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    task: Literal["classification", "regression"] = "classification"
    target: str
    features: list[str] | None = None
    recipe: Recipe = Recipe()
    monitor: MonitorSpec = MonitorSpec()
    trainer: TrainerSpec = TrainerSpec()
    evaluator: EvaluatorSpec = EvaluatorSpec()
    deployer: DeployerSpec = DeployerSpec()
    alerts: list[AlertDestination] = Field(
        default_factory=list,
        description="where the monitor sends this model's alerts (none: no alerts)",
    )

    @field_validator("alerts")
    @classmethod
    def _each_destination_once(cls, value: list[AlertDestination]) -> list[AlertDestination]:
        names = [d.url_env for d in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} is a destination more than once")
        return value

    @model_validator(mode="before")
    @classmethod
    def _metrics_for_the_task(cls, data: Any) -> Any:
        """Unset metrics default by task: f1/accuracy for classification, rmse for regression."""
        if not isinstance(data, dict):
            return data
        regression = data.get("task") == "regression"
        evaluator = data.get("evaluator")
        if evaluator is None or (isinstance(evaluator, dict) and "metric" not in evaluator):
            data = {
                **data,
                "evaluator": {**(evaluator or {}), "metric": "rmse" if regression else "f1"},
            }
        monitor = data.get("monitor")
        if monitor is None or isinstance(monitor, dict):
            perf = (monitor or {}).get("performance")
            if perf is None or (isinstance(perf, dict) and "metric" not in perf):
                perf = {**(perf or {}), "metric": "rmse" if regression else "accuracy"}
                data = {**data, "monitor": {**(monitor or {}), "performance": perf}}
        return data

    @model_validator(mode="after")
    def _metrics_match_the_task(self) -> ModelSpec:
        wanted = REGRESSION_METRICS if self.task == "regression" else CLASSIFICATION_METRICS
        for where, metric in (
            ("evaluator.metric", self.evaluator.metric),
            ("monitor.performance.metric", self.monitor.performance.metric),
        ):
            if metric not in wanted:
                raise ValueError(
                    f"{where}: {metric} does not apply to a {self.task} model "
                    f"(one of {', '.join(sorted(wanted))})"
                )
        return self

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


CLASSIFICATION_METRICS = frozenset({"accuracy", "f1", "precision", "recall", "roc_auc"})
REGRESSION_METRICS = frozenset({"rmse", "mae", "r2"})


class SpecError(ValueError):
    """A spec that cannot be applied; the message names the field."""


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(spec)"
        message = err["msg"].removeprefix("Value error, ")  # a validator's own words
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def parse_spec(text: str | bytes) -> ModelSpec:
    """Parse YAML (or JSON) into a spec; raises SpecError naming each wrong field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"not valid YAML: {exc}") from exc
    except RecursionError:
        raise SpecError("not valid YAML: nested too deeply") from None
    if not isinstance(raw, dict):
        raise SpecError("a spec is a mapping with at least `model` and `target`")
    budget = [100_000]  # values, counting each use of a YAML alias

    def storable(value: Any, where: str, within: frozenset[int]) -> None:
        """The spec travels as JSON (the specs bucket): no NaN, Infinity or cycles."""
        budget[0] -= 1
        if budget[0] < 0:
            raise SpecError("the spec is too large (are YAML aliases repeating each other?)")
        if isinstance(value, float) and (value != value or abs(value) == float("inf")):
            raise SpecError(f"{where}: {value} is not a finite number")
        if isinstance(value, dict | list):
            if id(value) in within:
                raise SpecError(f"{where}: contains itself")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                storable(item, f"{where}.{key}" if where else str(key), within | {id(value)})

    storable(raw, "", frozenset())
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc)) from exc
    except OverflowError as exc:  # e.g. a duration of 10**20 days
        raise SpecError(f"a duration or number is out of range ({exc})") from exc
    if spec.features is not None and spec.target in spec.features:
        raise SpecError(f"features: the target {spec.target!r} cannot also be a feature")
    if spec.monitor.drift.psi_retrain < spec.monitor.drift.psi_warn:
        raise SpecError("monitor.drift.psi_retrain: must be at least psi_warn")
    return spec
