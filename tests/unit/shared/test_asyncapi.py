"""The AsyncAPI document is generated from driftloop.shared.events and committed as docs/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from driftloop.shared.asyncapi import build_document, render
from driftloop.shared.events import EVENT_TYPES

DOC = Path(__file__).resolve().parents[3] / "docs" / "asyncapi.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document()


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_committed_document_is_up_to_date() -> None:
    committed = DOC.read_text(encoding="utf-8")

    generated = render()

    assert committed == generated, "docs/asyncapi.json is stale: run `make asyncapi`"


def test_render_is_deterministic() -> None:
    first = render()

    second = render()

    assert first == second
    assert json.loads(first)["asyncapi"] == "3.0.0"


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_has_a_channel_and_a_cloudevent_message(
    document: dict[str, Any], event_type: str
) -> None:
    channel = document["channels"][event_type]
    message = document["components"]["messages"][event_type]

    payload = message["payload"]

    assert channel["address"] == f"driftloop.events.{{model}}.{event_type}"
    assert set(channel["parameters"]) == {"model"}
    assert channel["messages"][event_type]["$ref"] == f"#/components/messages/{event_type}"
    assert payload["properties"]["type"]["const"] == event_type
    assert payload["properties"]["specversion"]["const"] == "1.0"
    assert payload["properties"]["data"]["$ref"] == f"#/components/schemas/{event_type}"
    assert document["operations"][f"send{event_type}"]["action"] == "send"


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("PredictionBatch", "driftloop.predictions.{model}"),
        ("FeedbackBatch", "driftloop.feedback.{model}"),
    ],
    ids=["predictions", "feedback"],
)
def test_record_streams_have_channels(document: dict[str, Any], name: str, address: str) -> None:
    channel = document["channels"][name]

    payload = document["components"]["messages"][name]["payload"]

    assert channel["address"] == address
    assert payload == {"$ref": f"#/components/schemas/{name}"}


def test_event_headers_document_dedup_id_and_trace_context(document: dict[str, Any]) -> None:
    headers = _resolve(document, document["components"]["messages"]["Deployed"]["headers"]["$ref"])

    names = set(headers["properties"])

    assert names == {"Nats-Msg-Id", "Content-Type", "traceparent", "tracestate"}
    assert headers["required"] == ["Nats-Msg-Id"]


def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    refs = _refs(document)

    unresolved = [ref for ref in refs if not _has(document, ref)]

    assert refs
    assert all(ref.startswith("#/") for ref in refs)
    assert unresolved == []
    assert "$defs" not in json.dumps(document)


def test_schemas_forbid_extra_fields_like_the_event_classes(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]

    closed = {name: schemas[name].get("additionalProperties") for name in EVENT_TYPES}

    assert closed == dict.fromkeys(EVENT_TYPES, False)


def _has(doc: dict[str, Any], ref: str) -> bool:
    try:
        _resolve(doc, ref)
    except (KeyError, TypeError):
        return False
    return True
