"""What users and the bus hand driftloop, fuzzed: model specs, event and record payloads, and
the CSV/Parquet files of `driftloop train --data` and `driftloop drift`. Each is read or
refused with the error type its callers catch, naming the problem; nothing else escapes (an
escaping exception is a traceback for a user, or a consumer that stops consuming)."""

from __future__ import annotations

import io
import json
import math
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import SPEC, consumer_settled, eventually
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from driftloop.cli.main import app as cli
from driftloop.cli.report import build_report
from driftloop.shared.bus import DEAD_LETTER_ERROR, DEADLETTER_STREAM, connect_bus
from driftloop.shared.config import Settings
from driftloop.shared.events import (
    EVENT_TYPES,
    PREDICTIONS_STREAM,
    FeedbackBatch,
    ModelTrained,
    PredictionBatch,
    UnknownEventError,
    envelope,
    parse_envelope,
)
from driftloop.shared.registry import read_table
from driftloop.shared.spec import ModelSpec, SpecError, parse_spec

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["10m", "7d", "0s", "1e999s", "-5", "nan", "inf", ".inf", "sklearn.x"]),
)
JSONISH = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
VALID_SPEC: dict[str, Any] = yaml.safe_load(SPEC)


def _leaves(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _replaced(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {**tree, head: _replaced(tree[head], rest, value)}
    return [_replaced(v, rest, value) if i == head else v for i, v in enumerate(tree)]


# Model specs ---------------------------------------------------------------------------


def _read_spec(text: str | bytes) -> ModelSpec | None:
    """parse_spec's only outcomes: a spec, or a SpecError with a message."""
    refused: SpecError | None = None
    try:
        return parse_spec(text)
    except SpecError as exc:
        refused = exc
    assert str(refused).strip()
    return None


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_any_text_is_a_spec_or_a_spec_error(text: str | bytes) -> None:
    _read_spec(text)


@FUZZ
@given(document=JSONISH, as_json=st.booleans())
def test_any_yaml_or_json_document_is_a_spec_or_a_spec_error(document: Any, as_json: bool) -> None:
    try:
        text = json.dumps(document) if as_json else yaml.safe_dump(document)
    except ValueError:  # e.g. a NaN key json refuses to write
        assume(False)
        return

    _read_spec(text)


@FUZZ
@given(data=st.data(), value=JSONISH)
def test_a_valid_spec_with_one_value_changed_is_accepted_or_refused_naming_the_field(
    data: st.DataObject, value: Any
) -> None:
    path = data.draw(st.sampled_from(_leaves(VALID_SPEC)))
    mutated = _replaced(VALID_SPEC, path, value)

    spec = _read_spec(yaml.safe_dump(mutated))

    if spec is None:
        with pytest.raises(SpecError) as refused:
            parse_spec(yaml.safe_dump(mutated))
        named = [str(p) for p in path if isinstance(p, str)]
        assert any(name in str(refused.value) for name in named), (path, refused.value)


@settings(FUZZ, max_examples=50)
@given(data=st.data(), value=JSONISH)
def test_an_accepted_spec_survives_its_trip_through_the_specs_bucket(
    data: st.DataObject, value: Any
) -> None:
    path = data.draw(st.sampled_from(_leaves(VALID_SPEC)))
    spec = _read_spec(yaml.safe_dump(_replaced(VALID_SPEC, path, value)))
    assume(spec is not None)
    assert spec is not None

    assert ModelSpec.model_validate_json(spec.to_json()) == spec  # as the services read it


LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
    for prev, name in zip("abcdef", "bcdefg", strict=True)
)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[" * 5000, "nested too deeply"),
        ("a: " + "{b: " * 3000 + "1" + "}" * 3000, "nested too deeply"),
        ("model: m\ntarget: t\nrecipe: {params: &p {a: *p}}", "recipe.params.a"),
        ("model: m\ntarget: t\nmonitor: {drift: {psi_warn: .inf}}", "monitor.drift.psi_warn"),
        ("model: m\ntarget: t\nrecipe: {params: {alpha: .nan}}", "recipe.params.alpha"),
        ("model: m\ntarget: t\nmonitor: {cooldown: 99999999999999999999d}", "monitor.cooldown"),
        (f"model: m\ntarget: t\na: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n{LAUGHS}", "too large"),
    ],
    ids=["deep-list", "deep-map", "cycle", "infinity", "nan", "huge-duration", "aliases"],
)
def test_specs_that_crashed_or_could_not_be_stored_are_refused_saying_why(
    text: str, says: str
) -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec(text)

    assert says in str(refused.value)


# Event and record payloads -------------------------------------------------------------


def _read_event(raw: bytes) -> None:
    """parse_envelope's only outcomes: an event, or UnknownEventError (the bus dead-letters
    that; anything else would end the consumer's loop)."""
    outcome: Any
    try:
        outcome = type(parse_envelope(raw)[1]).__name__
    except UnknownEventError as exc:
        outcome = exc
    assert outcome in EVENT_TYPES if isinstance(outcome, str) else str(outcome).strip()


def _trained() -> dict[str, Any]:
    event = ModelTrained(
        model="churn",
        cycle_id=str(uuid.uuid4()),
        version="1",
        run_id="r",
        dataset_version="d",
        metrics={"f1": 0.9},
        trigger="manual",
    )
    env = envelope(event, service="fuzz", at=datetime(2026, 1, 1, tzinfo=UTC))
    document: dict[str, Any] = json.loads(env.model_dump_json())
    return document


@FUZZ
@given(raw=st.binary(max_size=400))
def test_any_bytes_are_an_event_or_an_unknown_event_error(raw: bytes) -> None:
    _read_event(raw)


@FUZZ
@given(document=JSONISH)
def test_any_json_document_is_an_event_or_an_unknown_event_error(document: Any) -> None:
    _read_event(json.dumps(document).encode())


@FUZZ
@given(data=st.data(), value=JSONISH, event_type=st.sampled_from(sorted(EVENT_TYPES)))
def test_an_envelope_with_one_value_changed_is_an_event_or_an_unknown_event_error(
    data: st.DataObject, value: Any, event_type: str
) -> None:
    document = {**_trained(), "type": event_type}
    path = data.draw(st.sampled_from(_leaves(document)))

    _read_event(json.dumps(_replaced(document, path, value)).encode())


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        JSONISH.map(lambda d: json.dumps(d).encode()),
        st.sampled_from([b"[" * 100_000, b'{"model": NaN}', b'{"ids": ["\\ud800"]}']),
    ),
    record=st.sampled_from([PredictionBatch, FeedbackBatch]),
)
def test_any_payload_is_a_record_or_a_validation_error(
    raw: bytes, record: type[PredictionBatch] | type[FeedbackBatch]
) -> None:
    errors: list[Any] = []
    try:
        record.model_validate_json(raw)
    except ValidationError as exc:  # the bus turns this into an UnknownEventError
        errors = list(exc.errors()) or ["no error listed"]
    assert all(errors)


async def test_an_unreadable_record_is_dead_lettered_and_the_next_one_is_handled(
    tmp_path: Path, nats_url: str
) -> None:
    """The event consumers' case is in tests/integration/test_deadletter.py; this is the record
    streams' (predictions, feedback), which the trainer consumes."""
    settings = Settings(home=tmp_path / "home", nats_url=nats_url)
    good = PredictionBatch(
        model="m",
        version="1",
        route="champion",
        ids=["a"],
        instances=[{"x": 1.0}],
        predictions=[0],
        latency_ms=1.0,
        at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    seen: list[PredictionBatch] = []

    async def handler(batch: PredictionBatch) -> None:
        seen.append(batch)

    async with connect_bus(settings, service="t") as bus:
        subject = "driftloop.predictions.m"
        await bus.js.publish(subject, b"\xff\x00 not json", headers={"Nats-Msg-Id": "g1"})
        await bus.js.publish(subject, b'{"model": "m", "ids": [NaN]}')
        await bus.publish_record(subject, good, msg_id=good.batch_id)
        bus.subscribe_records(
            PREDICTIONS_STREAM, "driftloop.predictions.*", PredictionBatch, handler, durable="p"
        )

        async def dead_letters() -> list[Any]:
            info = await bus.js.stream_info(DEADLETTER_STREAM)
            assert info.state.messages == 2, info.state
            return [await bus.js.get_msg(DEADLETTER_STREAM, seq) for seq in (1, 2)]

        letters = await eventually(dead_letters, timeout=10, interval=0.1)
        await consumer_settled(bus.js, "t-p", acked=3, stream=PREDICTIONS_STREAM)

    assert seen == [good]
    assert [letter.data for letter in letters] == [
        b"\xff\x00 not json",
        b'{"model": "m", "ids": [NaN]}',
    ]
    for letter in letters:
        assert (letter.headers or {})[DEAD_LETTER_ERROR].startswith(
            "UnknownEventError: bad PredictionBatch"
        )


# CSV and Parquet files -----------------------------------------------------------------


CELLS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=8),
)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    """Small frames of odd columns: mixed types, NaN, infinities, huge integers, no rows."""
    names = draw(st.lists(st.sampled_from(["a", "b", "plan", "churned", ""]), max_size=4))
    rows = draw(st.integers(min_value=0, max_value=6))
    columns = {n: draw(st.lists(CELLS, min_size=rows, max_size=rows)) for n in names}
    return pd.DataFrame(columns)


def _write(frame: pd.DataFrame, path: Path) -> bool:
    """Write a frame as its suffix says; False when pandas itself cannot."""
    try:
        if path.suffix == ".parquet":
            frame.to_parquet(path)
        else:
            frame.to_csv(path, index=False)
    except Exception:
        return False
    return True


@FUZZ
@given(raw=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".parquet", ".gz", ".json"]))
def test_a_file_of_garbage_bytes_is_read_or_refused_with_a_value_error(
    raw: bytes, suffix: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(raw)
        outcome: pd.DataFrame | ValueError
        try:
            outcome = read_table(path)
        except ValueError as exc:
            outcome = exc
    if isinstance(outcome, ValueError):
        assert str(path) in str(outcome)
    else:
        assert isinstance(outcome, pd.DataFrame)


@FUZZ
@given(reference=frames(), current=frames(), suffix=st.sampled_from([".csv", ".parquet"]))
def test_drift_between_any_two_files_is_a_report_or_a_value_error(
    reference: pd.DataFrame, current: pd.DataFrame, suffix: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = Path(tmp) / f"reference{suffix}", Path(tmp) / f"current{suffix}"
        assume(_write(reference, paths[0]) and _write(current, paths[1]))
        outcome: Any
        try:
            outcome = build_report(*paths, target="churned")
        except ValueError as exc:
            outcome = exc
    if isinstance(outcome, ValueError):
        assert str(outcome).strip()
    else:
        for feature in outcome.document["features"].values():
            assert feature["psi"] is None or not math.isnan(feature["psi"])


@pytest.mark.parametrize(
    "content",
    [b"\x00\xff\xfe garbage", b"a,b\n1,2,3,4\n\x00", b"PAR1\x00\x00PAR1", b""],
    ids=["binary", "ragged", "fake-parquet", "empty"],
)
def test_driftloop_drift_on_a_broken_file_says_why_without_a_traceback(
    tmp_path: Path, content: bytes
) -> None:
    good = tmp_path / "good.csv"
    pd.DataFrame({"a": np.arange(50.0), "b": ["x", "y"] * 25}).to_csv(good, index=False)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(content)

    result = CliRunner().invoke(cli, ["drift", str(good), str(broken)])

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "broken.parquet" in result.output
    assert "Traceback" not in result.output


def test_a_csv_written_from_a_frame_reads_back(tmp_path: Path) -> None:
    """The loader reads what pandas writes (so the refusals above are about the bytes)."""
    frame = pd.DataFrame({"a": [1.5, 2.0], "plan": ["x", "y"]})
    path = tmp_path / "ok.csv"
    path.write_text(io.StringIO(frame.to_csv(index=False)).getvalue())

    assert read_table(path).equals(frame)
