"""Checking request instances against a model's signature, and picking a route. Pure."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any, Literal

NUMERIC_TYPES = frozenset({"integer", "long", "float", "double"})


@dataclass(frozen=True)
class FieldError:
    loc: tuple[str | int, ...]
    msg: str
    type: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


def _type_error(value: Any, expected: str) -> str | None:
    if value is None:
        return None  # missing values are data-quality figures, not request errors
    if expected in NUMERIC_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return "expected a finite number"
        return None
    if expected == "boolean":
        return (
            None if isinstance(value, bool) else f"expected a boolean, got {type(value).__name__}"
        )
    if expected == "string":
        return None if isinstance(value, str) else f"expected a string, got {type(value).__name__}"
    return None


def validate_instances(instances: list[dict[str, Any]], schema: dict[str, str]) -> list[FieldError]:
    """Every feature of the signature present with a value of its type (None is allowed)."""
    errors: list[FieldError] = []
    for i, inst in enumerate(instances):
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
        if len(errors) >= 20:
            break
    return errors


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
