"""Request instances against the model's signature, and routing by canary weight."""

from __future__ import annotations

import random
from typing import Any

import pytest

from driftloop.gateway.domain.validation import choose_route, validate_instances

SCHEMA = {"tenure": "double", "visits": "long", "plan": "string", "autopay": "boolean"}
VALID: dict[str, Any] = {"tenure": 12.5, "visits": 3, "plan": "basic", "autopay": True}


def test_instances_matching_the_signature_have_no_errors() -> None:
    instances = [VALID, {**VALID, "tenure": 7, "visits": 0, "autopay": False}]

    errors = validate_instances(instances, SCHEMA)

    assert errors == []


def test_a_missing_feature_is_named_with_its_location() -> None:
    instances = [VALID, {k: v for k, v in VALID.items() if k != "plan"}]

    errors = validate_instances(instances, SCHEMA)

    assert [e.as_dict() for e in errors] == [
        {
            "loc": ["body", "instances", 1, "plan"],
            "msg": "feature 'plan' is missing",
            "type": "missing",
        }
    ]


@pytest.mark.parametrize(
    ("feature", "value", "says"),
    [
        ("tenure", "12", "expected a number, got str"),
        ("tenure", True, "expected a number, got bool"),
        ("visits", False, "expected a number, got bool"),
        ("plan", 3, "expected a string, got int"),
        ("plan", 2.5, "expected a string, got float"),
        ("autopay", "yes", "expected a boolean, got str"),
        ("tenure", float("nan"), "expected a finite number"),
        ("tenure", float("inf"), "expected a finite number"),
        ("visits", float("-inf"), "expected a finite number"),
        ("tenure", [1.0], "expected a number, got list"),
    ],
    ids=[
        "string-for-numeric",
        "bool-for-numeric",
        "bool-for-integer",
        "int-for-string",
        "float-for-string",
        "string-for-boolean",
        "nan",
        "inf",
        "minus-inf",
        "list-for-numeric",
    ],
)
def test_a_value_of_the_wrong_type_is_rejected_naming_the_feature(
    feature: str, value: Any, says: str
) -> None:
    instances = [VALID, VALID, {**VALID, feature: value}]

    errors = validate_instances(instances, SCHEMA)

    [error] = errors
    assert error.loc == ("body", "instances", 2, feature)
    assert error.type == "type_error"
    assert feature in error.msg
    assert says in error.msg


@pytest.mark.parametrize("feature", list(SCHEMA), ids=list(SCHEMA))
def test_none_is_allowed_for_every_type(feature: str) -> None:
    errors = validate_instances([{**VALID, feature: None}], SCHEMA)

    assert errors == []


def test_every_bad_field_of_every_instance_is_reported() -> None:
    instances = [{"tenure": "x", "plan": "basic", "autopay": True}, VALID, {**VALID, "plan": 1}]

    errors = validate_instances(instances, SCHEMA)

    assert [e.loc for e in errors] == [
        ("body", "instances", 0, "tenure"),
        ("body", "instances", 0, "visits"),
        ("body", "instances", 2, "plan"),
    ]


# routing -----------------------------------------------------------------------------------


def _keys(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"customer-{rng.getrandbits(64):016x}" for _ in range(n)]


@pytest.mark.parametrize(
    ("weight", "route"),
    [(0, "champion"), (100, "canary")],
    ids=["weight-0-champion", "weight-100-canary"],
)
def test_weight_0_and_100_always_pick_one_side(weight: int, route: str) -> None:
    rng = random.Random(0)

    chosen = {choose_route(key, weight, rng=rng) for key in [*_keys(500, 1), None, ""]}
    unkeyed = {choose_route(None, weight, rng=rng) for _ in range(500)}

    assert chosen == unkeyed == {route}


@pytest.mark.parametrize("weight", [1, 10, 50, 90], ids=["w1", "w10", "w50", "w90"])
def test_the_same_key_always_gets_the_same_route(weight: int) -> None:
    keys = _keys(1000, 2)

    first = [choose_route(k, weight, rng=random.Random(1)) for k in keys]
    second = [choose_route(k, weight, rng=random.Random(999)) for k in keys]

    assert first == second


@pytest.mark.parametrize("weight", [5, 10, 50, 90], ids=["w5", "w10", "w50", "w90"])
def test_about_weight_percent_of_random_keys_go_to_the_canary(weight: int) -> None:
    keys = _keys(10_000, 3)

    share = sum(choose_route(k, weight, rng=random.Random(0)) == "canary" for k in keys) / len(keys)

    # binomial standard deviation is at most 0.005 for 10,000 keys; allow four of them
    assert share == pytest.approx(weight / 100, abs=0.02)


@pytest.mark.parametrize("weight", [10, 50], ids=["w10", "w50"])
def test_about_weight_percent_of_unkeyed_requests_go_to_the_canary(weight: int) -> None:
    rng = random.Random(4)

    share = sum(choose_route(None, weight, rng=rng) == "canary" for _ in range(10_000)) / 10_000

    assert share == pytest.approx(weight / 100, abs=0.02)


def test_raising_the_weight_only_moves_keys_towards_the_canary() -> None:
    keys = _keys(2000, 5)

    at_10 = {k for k in keys if choose_route(k, 10, rng=random.Random(0)) == "canary"}
    at_50 = {k for k in keys if choose_route(k, 50, rng=random.Random(0)) == "canary"}

    assert at_10 < at_50
