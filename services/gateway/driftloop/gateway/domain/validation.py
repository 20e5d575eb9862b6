"""Checking request bodies and instances against limits and a model's signature, and picking
a route. Pure."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

NUMERIC_TYPES = frozenset({"integer", "long", "float", "double"})
FLOAT32_MAX = 3.4028234663852886e38  # scikit-learn's trees read features as float32
INT64_MAX = 2**63 - 1
MAX_DEPTH = 32  # nesting of a JSON body; a predict request needs 4
MAX_ERRORS = 20


@dataclass(frozen=True)
class FieldError:
    loc: tuple[str | int, ...]
    msg: str
    type: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class BodyError(ValueError):
    """A JSON body that is well-formed but cannot be accepted; `errors` say where and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class _Unreadable:
    """A JSON value Python reads but a model cannot take: NaN, Infinity, a 5000-digit int."""

    msg: str


def _constant(name: str) -> _Unreadable:
    return _Unreadable(f"{name} is not a JSON number")


def _integer(text: str) -> int | _Unreadable:
    if len(text.lstrip("-")) > 19:
        return _Unreadable(f"an integer of {len(text.lstrip('-'))} digits is out of range")
    return int(text)


def parse_json_body(raw: bytes, *, max_string_length: int) -> Any:
    """A request body as strict JSON (RFC 8259): raises json.JSONDecodeError when it is not
    JSON, BodyError naming each value that is NaN or Infinity, a number beyond the 64-bit
    range (integers) or ±1.8e308 (floats), a string longer than `max_string_length`
    characters or not valid Unicode, or nesting deeper than MAX_DEPTH."""
    try:
        value = json.loads(raw, parse_constant=_constant, parse_int=_integer)
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as exc:
        error = FieldError(("body",), f"not UTF-8 text: {exc.reason}", "json_invalid")
        raise BodyError([error]) from None
    except RecursionError:
        raise BodyError(
            [FieldError(("body",), f"nested deeper than {MAX_DEPTH} levels", "json_invalid")]
        ) from None
    if not _acceptable(value, max_string_length, MAX_DEPTH):
        errors = unacceptable_values(value, max_string_length=max_string_length)
        if errors:
            raise BodyError(errors)
    return value


def _acceptable(value: Any, max_length: int, depth: int) -> bool:
    """The quick check of unacceptable_values, without locations (the usual body has none)."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is str:
        return len(value) <= max_length and (
            value.isascii() or _string_problem(value, max_length) is None
        )
    if kind is bool or value is None:
        return True
    if kind is int:
        return bool(abs(value) <= INT64_MAX)
    if depth <= 0:
        return False
    if kind is list:
        for item in value:  # noqa: SIM110 (a loop: no generator per list of every request)
            if not _acceptable(item, max_length, depth - 1):
                return False
        return True
    if kind is dict:
        for key, item in value.items():
            if len(key) > max_length or not _acceptable(item, max_length, depth - 1):
                return False
            if not key.isascii() and _string_problem(key, max_length) is not None:
                return False
        return True
    return False  # an _Unreadable


def _string_problem(text: str, max_length: int) -> str | None:
    if len(text) > max_length:
        return (
            f"a string of {len(text)} characters is longer than the limit of {max_length} "
            "(DRIFTLOOP_MAX_STRING_LENGTH)"
        )
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "not valid Unicode (a lone surrogate)"
    return None


def _scalar_problem(value: Any, max_string_length: int) -> str | None:
    if isinstance(value, str):
        return _string_problem(value, max_string_length)
    if isinstance(value, _Unreadable):
        return value.msg
    if isinstance(value, float) and not math.isfinite(value):
        return "a number beyond ±1.8e308 is out of range"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
        return "an integer beyond the 64-bit range"
    return None


def unacceptable_values(
    value: Any, *, max_string_length: int, root: tuple[str | int, ...] = ("body",)
) -> list[FieldError]:
    """Every value of a parsed JSON document a model or the bus cannot take, by location
    (iterative: a deep document cannot exhaust the stack)."""
    errors: list[FieldError] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [(root, value)]
    while stack and len(errors) < MAX_ERRORS:
        loc, item = stack.pop()
        if isinstance(item, dict | list):
            if len(loc) - len(root) >= MAX_DEPTH:
                errors.append(
                    FieldError(loc, f"nested deeper than {MAX_DEPTH} levels", "value_error")
                )
                continue
            if isinstance(item, list):
                stack.extend(((*loc, i), v) for i, v in reversed(list(enumerate(item))))
                continue
            for key in reversed(list(item)):
                problem = _string_problem(key, max_string_length)
                if problem:
                    errors.append(FieldError(loc, f"a key: {problem}", "value_error"))
                else:
                    stack.append(((*loc, key), item[key]))
            continue
        problem = _scalar_problem(item, max_string_length)
        if problem:
            errors.append(FieldError(loc, problem, "value_error"))
    return errors


def _type_error(value: Any, expected: str) -> str | None:
    if value is None:
        return None  # missing values are data-quality figures, not request errors
    if expected in NUMERIC_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return "expected a finite number"
        if abs(value) > FLOAT32_MAX:
            return f"{value:.3g} is out of range (at most ±3.4e38)"
        return None
    if expected == "boolean":
        return (
            None if isinstance(value, bool) else f"expected a boolean, got {type(value).__name__}"
        )
    if expected == "string":
        return None if isinstance(value, str) else f"expected a string, got {type(value).__name__}"
    return None


def validate_instances(instances: list[dict[str, Any]], schema: dict[str, str]) -> list[FieldError]:
    """Every feature of the signature present with a value of its type (None is allowed), and
    no other field."""
    errors: list[FieldError] = []
    for i, inst in enumerate(instances):
        for name in [k for k in inst if k not in schema]:
            errors.append(
                FieldError(
                    ("body", "instances", i, name),
                    f"unknown feature {name!r} (the model takes {', '.join(schema)})",
                    "extra_forbidden",
                )
            )
        for name, expected in schema.items():
            if name not in inst:
                errors.append(
                    FieldError(
                        ("body", "instances", i, name), f"feature {name!r} is missing", "missing"
                    )
                )
                continue
            problem = _type_error(inst[name], expected)
            if problem:
                errors.append(
                    FieldError(
                        ("body", "instances", i, name), f"feature {name!r}: {problem}", "type_error"
                    )
                )
        if len(errors) >= MAX_ERRORS:
            break
    return errors[:MAX_ERRORS]


def validate_labels(labels: list[Any]) -> list[FieldError]:
    """A label is one class or one target value: a string, a number or a boolean."""
    return [
        FieldError(
            ("body", "labels", i, "label"),
            f"expected a string, number or boolean, got {type(label).__name__}",
            "type_error",
        )
        for i, label in enumerate(labels)
        if label is None or isinstance(label, dict | list)
    ][:MAX_ERRORS]


MAX_ID_LENGTH = 256  # characters of a prediction id (as a label's `id`)


def validate_ids(ids: Any, rows: int, loc: tuple[str | int, ...]) -> list[FieldError]:
    """Prediction ids given with a request, at `loc`: a list of one string (1 to
    MAX_ID_LENGTH characters) per row, no two alike (a label joins one prediction)."""
    if not isinstance(ids, list):
        return [
            FieldError(loc, f"expected a list of strings, got {type(ids).__name__}", "list_type")
        ]
    errors = [
        FieldError(
            (*loc, i),
            f"expected a string of 1 to {MAX_ID_LENGTH} characters, got "
            + (f"{len(v)} characters" if isinstance(v, str) else type(v).__name__),
            "string_type",
        )
        for i, v in enumerate(ids)
        if not isinstance(v, str) or not 0 < len(v) <= MAX_ID_LENGTH
    ][:MAX_ERRORS]
    if errors:
        return errors
    if len(ids) != rows:
        return [
            FieldError(
                loc, f"ids must have one entry per instance ({len(ids)} for {rows})", "value_error"
            )
        ]
    counts = Counter(ids)
    repeated = next((v for v in ids if counts[v] > 1), None)
    if repeated is not None:
        return [
            FieldError(
                loc,
                f"ids must be distinct: {repeated!r} is given {counts[repeated]} times",
                "value_error",
            )
        ]
    return []


PREDICT_FIELDS = frozenset({"instances", "ids", "key"})
MAX_KEY_LENGTH = 256


@dataclass(frozen=True, slots=True)
class PlainPredict:
    """A /v1 predict body in the shape the API documents (PredictRequest)."""

    instances: list[dict[str, Any]]
    ids: list[str] | None
    key: str | None


def plain_predict(document: Any) -> PlainPredict | None:
    """`document` (parsed JSON) as a PlainPredict when it has exactly the shape PredictRequest
    accepts (no other field; instances a non-empty list of objects; ids absent, null or a list
    of 1-to-256-character strings; key absent, null or a string of at most 256), else None:
    anything else is left to the full validation, which names what is wrong."""
    if type(document) is not dict or not document.keys() <= PREDICT_FIELDS:
        return None
    instances = document.get("instances")
    if type(instances) is not list or not instances:
        return None
    for row in instances:
        if type(row) is not dict:
            return None
    ids = document.get("ids")
    if ids is not None:
        if type(ids) is not list:
            return None
        for given in ids:
            if type(given) is not str or not 0 < len(given) <= MAX_ID_LENGTH:
                return None
    key = document.get("key")
    if key is not None and (type(key) is not str or len(key) > MAX_KEY_LENGTH):
        return None
    return PlainPredict(instances, ids, key)


def choose_route(
    key: str | None, canary_weight: int, *, rng: random.Random
) -> Literal["champion", "canary"]:
    """Champion or canary by weight (percent); the same key always gets the same answer."""
    if canary_weight <= 0:
        return "champion"
    if canary_weight >= 100:
        return "canary"
    if key:
        bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 100
    else:
        bucket = rng.randrange(100)
    return "canary" if bucket < canary_weight else "champion"
