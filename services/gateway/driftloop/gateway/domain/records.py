"""Cutting a prediction record into pieces that each fit the bus's largest message. Pure.

A record of a maximal request (DRIFTLOOP_MAX_INSTANCES rows) can be larger than NATS's
`max_payload` (1 MiB by default), which the server refuses whatever the retries. Its rows are
cut into consecutive runs, each published as a PredictionBatch of its own with the record's
fields (`batch_id`, model, version, route, time, latency, error) and `part`/`parts` set; every
row keeps its prediction id and is in exactly one piece.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Bytes of a message left for its headers (Nats-Msg-Id, the trace context): the server counts
# them in max_payload, and closes the connection of a client that sends more.
HEADER_ROOM = 1024


@dataclass(frozen=True)
class Piece:
    msg_id: str  # the piece's Nats-Msg-Id
    payload: bytes
    fits: bool = True  # False: a single row over the limit, which no message can carry


class UnsplittableError(ValueError):
    """A payload over the limit that is not a prediction record: it cannot be cut."""


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def split_record(msg_id: str, payload: bytes, limit: int) -> list[Piece]:
    """The record itself when it is at most `limit` bytes; else pieces of consecutive rows,
    each at most `limit` bytes, as few as a greedy cut makes, then each row that is over the
    limit on its own as a piece of one row with `fits` False (the rows that fit go first, so
    the first piece, which carries the request, is one that can be published).

    A piece's message id is `<msg_id>:<first row>-<end row>/<limit>`: the same cut always gives
    the same ids (a re-publish is de-duplicated), and another cut (another max_payload) never
    reuses one for other rows. Raises UnsplittableError when the payload is no record."""
    if len(payload) <= limit:
        return [Piece(msg_id, payload)]
    try:
        record = json.loads(payload)
    except ValueError as exc:
        raise UnsplittableError(f"not JSON: {exc}") from exc
    if not isinstance(record, dict) or not all(
        isinstance(record.get(k), list) for k in ("ids", "instances", "predictions")
    ):
        raise UnsplittableError("not a prediction record (ids, instances, predictions)")
    ids, instances, predictions = record["ids"], record["instances"], record["predictions"]
    rows = len(ids)
    if len(instances) != rows or len(predictions) not in (0, rows):
        raise UnsplittableError(
            f"{rows} ids, {len(instances)} instances and {len(predictions)} predictions"
        )
    answered = bool(predictions)  # a failed request's record has no predictions
    # The size of a piece is its fields with empty lists (part and parts at their widest) plus
    # each row's id, instance and prediction and a comma after each (one too many: a bound).
    empty = record | {"ids": [], "instances": [], "predictions": [], "part": rows, "parts": rows}
    overhead = len(_dump(empty))
    runs: list[list[int]] = []  # rows of each piece that fits
    alone: list[int] = []  # rows over the limit on their own
    size = limit + 1  # no run open
    for i in range(rows):
        cost = len(_dump(ids[i])) + len(_dump(instances[i])) + 2
        if answered:
            cost += len(_dump(predictions[i])) + 1
        if overhead + cost > limit:
            alone.append(i)
        elif size + cost > limit:
            runs.append([i])
            size = overhead + cost
        else:
            runs[-1].append(i)
            size += cost
    groups = [(run, True) for run in runs] + [([i], False) for i in alone]
    return [
        Piece(
            f"{msg_id}:{group[0]}-{group[-1] + 1}/{limit}",
            _dump(
                record
                | {
                    "ids": [ids[i] for i in group],
                    "instances": [instances[i] for i in group],
                    "predictions": [predictions[i] for i in group] if answered else [],
                    "part": k,
                    "parts": len(groups),
                }
            ),
            fits,
        )
        for k, (group, fits) in enumerate(groups)
    ]
