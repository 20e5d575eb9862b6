"""The AsyncAPI 3.0 document of the bus, generated from the classes in `events.py`.

`python -m driftloop.shared.asyncapi` prints it (`make asyncapi` writes docs/asyncapi.json);
a unit test fails when the committed document differs from what this module generates.
"""

from __future__ import annotations

import copy
import json
import sys
from importlib.metadata import version as package_version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from driftloop.shared.bus import (
    DEAD_LETTER_DELIVERIES,
    DEAD_LETTER_DURABLE,
    DEAD_LETTER_ERROR,
    DEAD_LETTER_SEQUENCE,
    DEAD_LETTER_STREAM,
    DEAD_LETTER_SUBJECT,
    DEADLETTER_PREFIX,
    DEADLETTER_STREAM,
)
from driftloop.shared.events import (
    EVENT_TYPES,
    EVENTS_STREAM,
    FEEDBACK_STREAM,
    PREDICTIONS_STREAM,
    Envelope,
    FeedbackBatch,
    PredictionBatch,
)

ASYNCAPI_VERSION = "3.0.0"
SCHEMA_REF = "#/components/schemas/{model}"
RECORDS: dict[str, tuple[type[BaseModel], str, str]] = {
    # message name: (payload class, subject prefix, stream)
    "PredictionBatch": (PredictionBatch, "driftloop.predictions", PREDICTIONS_STREAM),
    "FeedbackBatch": (FeedbackBatch, "driftloop.feedback", FEEDBACK_STREAM),
}

_W3C_TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_HEADERS: dict[str, Any] = {
    "EventHeaders": {
        "type": "object",
        "description": "NATS headers of an event message",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "the CloudEvents `id`: JetStream de-duplicates on it",
            },
            "Content-Type": {
                "type": "string",
                "const": "application/cloudevents+json",
                "description": "structured mode of the CloudEvents NATS binding (every event "
                "published by this version; the audit log's older ones may lack it)",
            },
            "traceparent": {
                "type": "string",
                "pattern": _W3C_TRACEPARENT,
                "description": "W3C trace context: the cycle's trace and the publishing span",
            },
            "tracestate": {"type": "string", "description": "W3C trace context, vendor part"},
        },
        "required": ["Nats-Msg-Id"],  # the audit log's older events carry no Content-Type
    },
    "RecordHeaders": {
        "type": "object",
        "description": "NATS headers of a prediction or feedback record",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "the record's id: JetStream de-duplicates on it",
            },
            "traceparent": {
                "type": "string",
                "pattern": _W3C_TRACEPARENT,
                "description": "W3C trace context, when the publisher sets it",
            },
            "tracestate": {"type": "string", "description": "W3C trace context, vendor part"},
        },
        "required": ["Nats-Msg-Id"],
    },
    "DeadLetterHeaders": {
        "type": "object",
        "description": "NATS headers of a dead letter: where the message came from and why",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "<stream>:<sequence>:dlq, so a re-publish is de-duplicated",
            },
            DEAD_LETTER_SUBJECT: {"type": "string", "description": "the subject it came on"},
            DEAD_LETTER_STREAM: {"type": "string", "description": "the stream it came from"},
            DEAD_LETTER_SEQUENCE: {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "its sequence in that stream",
            },
            DEAD_LETTER_DURABLE: {"type": "string", "description": "the consumer that gave up"},
            DEAD_LETTER_DELIVERIES: {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "how many times it was delivered",
            },
            DEAD_LETTER_ERROR: {
                "type": "string",
                "description": "why: `<ExceptionType>: <message>`, one line, truncated",
            },
            "traceparent": {"type": "string", "pattern": _W3C_TRACEPARENT},
            "tracestate": {"type": "string"},
            "Content-Type": {"type": "string", "description": "the original message's, if any"},
        },
        "required": [
            "Nats-Msg-Id",
            DEAD_LETTER_SUBJECT,
            DEAD_LETTER_STREAM,
            DEAD_LETTER_SEQUENCE,
            DEAD_LETTER_DURABLE,
            DEAD_LETTER_DELIVERIES,
            DEAD_LETTER_ERROR,
        ],
    },
}
_MODEL_PARAMETER = {
    "description": "the model's name, as in its spec (`model:`)",
    "examples": ["churn"],
}
_DURABLE_PARAMETER = {
    "description": "the consumer that gave up, `<service>-<EventType or record kind>`",
    "examples": ["trainer-RetrainRequested"],
}


def _summary(cls: type[BaseModel]) -> str:
    doc = (cls.__doc__ or cls.__name__).strip()
    return doc.splitlines()[0]


def _schemas() -> dict[str, Any]:
    """JSON Schemas of every payload class, keyed by class name, $refs into components."""
    classes: list[type[BaseModel]] = [
        Envelope,
        *EVENT_TYPES.values(),
        *(cls for cls, _, _ in RECORDS.values()),
    ]
    _, top = models_json_schema([(cls, "validation") for cls in classes], ref_template=SCHEMA_REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    missing = [cls.__name__ for cls in classes if cls.__name__ not in schemas]
    if missing:  # pydantic names a schema after its class unless two classes share a name
        raise RuntimeError(f"schemas not generated under their class names: {missing}")
    return schemas


def _cloud_event(envelope_schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The envelope's schema narrowed to one event type, `data` being that event."""
    schema = copy.deepcopy(envelope_schema)
    schema["title"] = f"{name} CloudEvent"
    schema["description"] = f"CloudEvents 1.0 (structured JSON) carrying {name}"
    props = schema["properties"]
    props["type"] = {"const": name, "type": "string", "description": "the event type"}
    props["source"] = {
        **props["source"],
        "pattern": "^/services/[A-Za-z0-9_.-]+$",
        "description": "the emitting service, /services/<name>",
    }
    props["subject"] = {**props["subject"], "description": "the model's name"}
    props["data"] = {"$ref": SCHEMA_REF.format(model=name)}
    return schema


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every channel, message and schema on the bus."""
    schemas = _schemas()
    envelope_schema = schemas.pop(Envelope.__name__)
    schemas.update(_HEADERS)
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    for name, cls in sorted(EVENT_TYPES.items()):
        messages[name] = {
            "name": name,
            "title": name,
            "summary": _summary(cls),
            "contentType": "application/cloudevents+json",
            "headers": {"$ref": SCHEMA_REF.format(model="EventHeaders")},
            "payload": _cloud_event(envelope_schema, name),
        }
        channels[name] = {
            "address": f"driftloop.events.{{model}}.{name}",
            "title": name,
            "description": f"{_summary(cls)} Stream {EVENTS_STREAM} (kept: the audit log).",
            "parameters": {"model": {"$ref": "#/components/parameters/model"}},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"send{name}"] = _send(name)

    for name, (record, prefix, stream) in sorted(RECORDS.items()):
        messages[name] = {
            "name": name,
            "title": name,
            "summary": _summary(record),
            "contentType": "application/json",
            "headers": {"$ref": SCHEMA_REF.format(model="RecordHeaders")},
            "payload": {"$ref": SCHEMA_REF.format(model=name)},
        }
        channels[name] = {
            "address": f"{prefix}.{{model}}",
            "title": name,
            "description": f"{_summary(record)} Stream {stream}.",
            "parameters": {"model": {"$ref": "#/components/parameters/model"}},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"send{name}"] = _send(name)

    messages["DeadLetter"] = {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "A message a consumer gave up on, unchanged; its headers say why.",
        "contentType": "application/octet-stream",
        "headers": {"$ref": SCHEMA_REF.format(model="DeadLetterHeaders")},
        "payload": {"description": "the original message's bytes (any event or record)"},
    }
    channels["DeadLetter"] = {
        "address": f"{DEADLETTER_PREFIX}.{{model}}.{{durable}}",
        "title": "DeadLetter",
        "description": (
            "Messages whose handler failed on its last allowed delivery, or that could not "
            f"be read. Stream {DEADLETTER_STREAM} (kept); `driftloop events` shows them."
        ),
        "parameters": {
            "model": {"$ref": "#/components/parameters/model"},
            "durable": {"$ref": "#/components/parameters/durable"},
        },
        "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
    }
    operations["sendDeadLetter"] = _send("DeadLetter")

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "driftloop bus",
            "version": package_version("driftloop"),
            "description": (
                "Events of the retraining loop (CloudEvents 1.0, structured JSON) and the "
                "prediction and feedback records, on NATS JetStream. Generated from "
                "driftloop.shared.events by `python -m driftloop.shared.asyncapi`; "
                "do not edit by hand."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "the embedded nats-server that `driftloop up` starts",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "parameters": {"model": _MODEL_PARAMETER, "durable": _DURABLE_PARAMETER},
        },
    }


def _send(name: str) -> dict[str, Any]:
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{name}"},
        "messages": [{"$ref": f"#/channels/{name}/messages/{name}"}],
    }


def render() -> str:
    """The document as deterministic JSON text (sorted keys, indent 2, final newline)."""
    return json.dumps(build_document(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
