"""What the gateway refuses before any model runs: bodies over the size limit, bodies that are
not JSON, JSON numbers and strings a model cannot take, and malformed binary tensors; each
refusal is JSON naming the limit or the field."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop.gateway.app import create_app
from driftloop.gateway.domain.validation import (
    MAX_DEPTH,
    MAX_ERRORS,
    BodyError,
    parse_json_body,
    unacceptable_values,
    validate_instances,
    validate_labels,
)
from driftloop.gateway.oip import binary_to_json
from driftloop.shared.config import Settings

SCHEMA = {"tenure": "double", "plan": "string"}


def refusal(raw: bytes, *, max_string_length: int = 10) -> list[dict[str, Any]]:
    with pytest.raises(BodyError) as refused:
        parse_json_body(raw, max_string_length=max_string_length)
    return [e.as_dict() for e in refused.value.errors]


def test_plain_json_reads_as_json_does() -> None:
    raw = b'{"instances": [{"tenure": 1.5, "plan": "basic", "n": -3, "ok": true, "x": null}]}'

    assert parse_json_body(raw, max_string_length=10) == json.loads(raw)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (b"NaN", "NaN is not a JSON number"),
        (b"Infinity", "Infinity is not a JSON number"),
        (b"-Infinity", "-Infinity is not a JSON number"),
        (b"1e400", "out of range"),
        (b"-1e400", "out of range"),
        (b"9223372036854775808", "beyond the 64-bit range"),
        (b"9" * 30, "30 digits is out of range"),
        (b"9" * 5000, "5000 digits is out of range"),
        (b'"' + b"x" * 11 + b'"', "longer than the limit of 10 (DRIFTLOOP_MAX_STRING_LENGTH)"),
        (b'"\\ud800"', "lone surrogate"),
    ],
    ids=["nan", "inf", "minus-inf", "overflow", "minus-overflow", "int64", "30-digits",
         "5000-digits", "long-string", "surrogate"],
)  # fmt: skip
def test_a_value_a_model_cannot_take_is_refused_by_its_location(value: bytes, says: str) -> None:
    raw = b'{"instances": [{"tenure": 1.0}, {"tenure": ' + value + b"}]}"

    [error] = refusal(raw)

    assert error["loc"] == ["body", "instances", 1, "tenure"]
    assert says in error["msg"]


def test_a_long_key_is_refused_at_its_object() -> None:
    [error] = refusal(b'{"instances": [{"' + b"k" * 11 + b'": 1}]}')

    assert error["loc"] == ["body", "instances", 0]
    assert error["msg"].startswith("a key: a string of 11 characters")


def test_text_that_is_not_utf8_is_refused() -> None:
    [error] = refusal(b'{"a": "\xff"}')

    assert error["loc"] == ["body"]
    assert "not UTF-8" in error["msg"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000], ids=["over-limit", "stack-deep"])
def test_deep_nesting_is_refused(depth: int) -> None:
    [error] = refusal(b"[" * depth + b"]" * depth)

    assert f"nested deeper than {MAX_DEPTH} levels" in error["msg"]


def test_malformed_json_is_left_to_fastapi_as_a_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        parse_json_body(b'{"instances": [', max_string_length=10)


DOCUMENTS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=14),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=14), children, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(document=DOCUMENTS)
def test_a_body_is_refused_exactly_when_some_value_is_unacceptable(document: Any) -> None:
    raw = json.dumps(document).encode()  # NaN and Infinity written as Python does

    expected = unacceptable_values(json.loads(raw), max_string_length=10)
    refused: list[Any] = []
    try:
        parse_json_body(raw, max_string_length=10)
    except BodyError as exc:
        refused = exc.errors

    assert [e.loc for e in refused] == [e.loc for e in expected]


def test_at_most_max_errors_are_reported() -> None:
    errors = unacceptable_values([float("nan")] * 100, max_string_length=10)

    assert len(errors) == MAX_ERRORS
    assert errors[0].loc == ("body", 0)


def test_an_unknown_feature_is_refused_naming_it_and_the_model_s_features() -> None:
    [error] = validate_instances([{"tenure": 1.0, "plan": "a", "colour": "red"}], SCHEMA)

    assert error.loc == ("body", "instances", 0, "colour")
    assert error.type == "extra_forbidden"
    assert "tenure, plan" in error.msg


@pytest.mark.parametrize("value", [3.5e38, -1e300, 10**39], ids=["float", "negative", "int"])
def test_a_number_beyond_float32_is_refused_for_a_numeric_feature(value: float) -> None:
    [error] = validate_instances([{"tenure": value, "plan": "a"}], SCHEMA)

    assert error.loc == ("body", "instances", 0, "tenure")
    assert "out of range" in error.msg


def test_a_label_is_a_string_number_or_boolean() -> None:
    errors = validate_labels(["yes", 1, 0.5, True, None, [1], {"a": 1}])

    assert [e.loc for e in errors] == [("body", "labels", i, "label") for i in (4, 5, 6)]


# Triton's binary tensor extension ---------------------------------------------------------


def binary_request(tensors: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    header = json.dumps(
        {
            "inputs": [
                {"name": n, "datatype": d, "shape": [2], "parameters": {"binary_data_size": len(b)}}
                for n, d, b in tensors
            ]
        }
    ).encode()
    return header + b"".join(b for _, _, b in tensors), str(len(header))


def test_binary_tensors_become_json_data() -> None:
    raw, length = binary_request(
        [
            ("tenure", "FP64", np.array([1.5, -2.0]).tobytes()),
            ("visits", "INT64", np.array([3, 4], dtype="<i8").tobytes()),
            ("autopay", "BOOL", np.array([True, False]).tobytes()),
            ("plan", "BYTES", b"".join(struct.pack("<I", len(s)) + s for s in (b"pro", b"ma"))),
        ]
    )

    decoded = json.loads(binary_to_json(raw, length))

    assert [i["data"] for i in decoded["inputs"]] == [
        [1.5, -2.0],
        [3, 4],
        [True, False],
        ["pro", "ma"],
    ]
    assert all("binary_data_size" not in i["parameters"] for i in decoded["inputs"])


@pytest.mark.parametrize(
    ("tensors", "length", "says"),
    [
        ([("a", "FP64", b"\x00" * 12)], None, "not whole FP64 values"),
        ([("a", "BYTES", b"\x05\x00\x00\x00ab")], None, "runs past its tensor"),
        ([("a", "BYTES", b"\x01\x00")], None, "without its 4-byte length"),
        ([("a", "BYTES", b"\x01\x00\x00\x00\xff")], None, "not UTF-8"),
        ([("a", "COMPLEX", b"\x00")], None, "unknown datatype"),
        ([("a", "FP64", b"\x00" * 8)], "x", "does not fit the body"),
        ([("a", "FP64", b"\x00" * 8)], "99999", "does not fit the body"),
    ],
    ids=["ragged", "bytes-overrun", "bytes-length", "bytes-not-utf8", "datatype", "header-nan",
         "header-long"],
)  # fmt: skip
def test_malformed_binary_tensors_are_refused_saying_why(
    tensors: list[tuple[str, str, bytes]], length: str | None, says: str
) -> None:
    raw, header = binary_request(tensors)

    with pytest.raises(ValueError, match=says):
        binary_to_json(raw, length or header)


def test_bytes_after_the_last_tensor_are_refused() -> None:
    raw, length = binary_request([("a", "FP64", b"\x00" * 8)])

    with pytest.raises(ValueError, match="1 bytes after the last binary input"):
        binary_to_json(raw + b"!", length)


# The application, without its lifespan: these refusals come before any model or bus ----


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = create_app(Settings(home=tmp_path, max_body_bytes=1000))
    return TestClient(app, base_url="http://127.0.0.1")  # the gateway on loopback checks Host


@pytest.mark.parametrize(
    ("path", "key"),
    [("/v1/models/churn/predict", "detail"), ("/v2/models/churn/infer", "error")],
    ids=["v1", "oip"],
)
def test_refusals_are_json_naming_the_limit_the_content_type_or_the_field(
    client: TestClient, path: str, key: str
) -> None:
    too_large = client.post(path, content=b"[" + b"0," * 600 + b"0]")
    streamed = client.post(path, content=iter([b"[", b"0," * 600, b"0]"]))
    not_json = client.post(path, content=b"a=1", headers={"content-type": "text/plain"})
    gzipped = client.post(path, content=b"{}", headers={"content-encoding": "gzip"})
    nan = client.post(
        path, content=b'{"instances": [{"a": NaN}]}', headers={"content-type": "application/json"}
    )

    assert too_large.status_code == 413
    assert "1000 bytes (DRIFTLOOP_MAX_BODY_BYTES)" in too_large.json()[key]
    assert streamed.status_code == 413
    assert not_json.status_code == 415
    assert "'text/plain'" in not_json.json()[key]
    assert gzipped.status_code == 415
    assert nan.status_code == 422
    named = nan.json()[key]
    where = named if key == "error" else ".".join(map(str, named[0]["loc"][1:]))
    assert where.startswith("instances.0.a")


def test_the_openapi_document_names_every_refusal_with_its_body(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    for path, codes in [
        ("/v1/models/{model}/predict", {"404", "413", "415", "422", "503"}),
        ("/v1/models/{model}/feedback", {"401", "403", "404", "413", "415", "422", "503"}),
        ("/v2/models/{model}/infer", {"404", "413", "415", "422"}),
    ]:
        responses = paths[path]["post"]["responses"]
        assert codes <= set(responses), path
        assert all("application/json" in responses[c]["content"] for c in codes), path


def test_the_limits_default_to_10_mib_10000_instances_and_1000_characters(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path)

    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.max_instances == 10_000
    assert settings.max_string_length == 1_000
