"""Who may publish and subscribe to what on NATS: one user per service (and one for the CLI),
each allowed only the subjects, streams and consumers it uses.

A service publishes its own events, records, KV writes and requests, and calls the JetStream
API only for its own durable consumers, the KV buckets it reads, and the (idempotent) creation
of the topology; it subscribes only to its own inbox (`_INBOX.<account>.>`: its replies and
JetStream deliveries) and to the request subjects it answers, so nobody else reads a control
request (and its token), another service's replies or deliveries, or answers the monitor's
status in its place. Replies go back through `allow_responses`: a service may publish to the
reply subject of a request it received, and to no other inbox. Nobody updates, deletes or
purges a stream or deletes a message (the events stream is the audit log); the CLI, the
administrator's identity, may update one (`driftloop up` creates or upgrades the topology).

The embedded server started by `driftloop up` is configured from `render_conf` with fresh
passwords; deploy/nats.conf (docker compose) is the same document with the passwords taken
from the environment.
"""

from __future__ import annotations

import json
from urllib.parse import unquote, urlsplit

from driftloop.shared.events import (
    DEPLOYER_CONTROL,
    DEPLOYER_STATUS,
    EVENTS_STREAM,
    FEEDBACK_STREAM,
    PREDICTIONS_STREAM,
    ROUTES_BUCKET,
    SPECS_BUCKET,
)

# Subjects of request-reply answered by one service (the constants live in the services, which
# shared/ may not import; tests/unit/shared/test_permissions.py checks they agree).
MONITOR_STATUS = "driftloop.rpc.monitor.status"
MONITOR_VERSION = "driftloop.rpc.monitor.version"
TRAINER_STATUS = "driftloop.rpc.trainer.status"
DEADLETTER_STREAM = "DRIFTLOOP_DEADLETTER"  # bus.py's (bus imports this module, not the reverse)
STREAMS = (EVENTS_STREAM, PREDICTIONS_STREAM, FEEDBACK_STREAM, DEADLETTER_STREAM)
BUCKETS = (ROUTES_BUCKET, SPECS_BUCKET)

# Events each account may publish on `driftloop.events.<model>.<EventType>`.
EMITS: dict[str, tuple[str, ...]] = {
    "gateway": (),
    "monitor": ("DriftDetected", "PerformanceDegraded", "RetrainRequested", "AdaptationStalled"),
    "trainer": ("DataRejected", "TrainingFailed", "ModelTrained"),
    "evaluator": ("EvaluationPassed", "EvaluationFailed"),
    "deployer": ("RolloutAdvanced", "ApprovalRequired", "Approved", "Deployed", "RolledBack"),
    "cli": ("RetrainRequested",),  # `driftloop train` (bootstrap) and `retrain` (manual)
}
# Events each service consumes: its durable `<service>-<EventType>` on the events stream
# (`Bus.subscribe`).
CONSUMES: dict[str, tuple[str, ...]] = {
    "gateway": (),
    "monitor": (
        "RetrainRequested",
        "Deployed",
        "EvaluationPassed",
        "EvaluationFailed",
        "DataRejected",
        "TrainingFailed",
        "RolledBack",
        # read for the alerts alone (the monitor tells people: docs/decisions.md, "Alerts")
        "DriftDetected",
        "PerformanceDegraded",
        "AdaptationStalled",
        "ApprovalRequired",
    ),
    "trainer": ("RetrainRequested",),
    "evaluator": ("ModelTrained",),
    "deployer": ("EvaluationPassed",),
    "cli": (),
}
# Records each service consumes: its durable `<service>-<name>` (`Bus.subscribe_records`).
RECORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "monitor": ((PREDICTIONS_STREAM, "predictions"), (FEEDBACK_STREAM, "feedback")),
    "trainer": ((PREDICTIONS_STREAM, "predictions"), (FEEDBACK_STREAM, "feedback")),
}
# Other subjects each account publishes to: records, KV writes, requests.
PUBLISHES: dict[str, tuple[str, ...]] = {
    # the console's controls: a person's command, with the token they typed (gateway/console)
    "gateway": (
        "driftloop.predictions.>",
        "driftloop.feedback.>",
        MONITOR_STATUS,
        MONITOR_VERSION,  # the console's live stats per serving version
        DEPLOYER_CONTROL,
    ),
    "monitor": (),
    "trainer": (),
    "evaluator": (),
    "deployer": (f"$KV.{ROUTES_BUCKET}.>", MONITOR_VERSION),  # weights; live stats
    "cli": (f"$KV.{SPECS_BUCKET}.>", "driftloop.rpc.>"),  # apply; ping, status, commands
}
# KV buckets each service reads (get, or watch).
READS: dict[str, tuple[str, ...]] = {
    "gateway": (ROUTES_BUCKET, SPECS_BUCKET),  # watches both
    "monitor": (SPECS_BUCKET,),
    "trainer": (SPECS_BUCKET,),
    "evaluator": (SPECS_BUCKET,),
    "deployer": (ROUTES_BUCKET, SPECS_BUCKET),
}
# Streams a service reads single messages of, and the info of (where they end): the gateway,
# a model's last verdict and its web console's timeline, read message by message (no consumer:
# a consumer-create right on the stream would let it rewrite another service's durable).
GETS: dict[str, tuple[str, ...]] = {"gateway": (EVENTS_STREAM,)}
# Request subjects each service answers (beside its ping): only it may subscribe to them.
RESPONDS: dict[str, tuple[str, ...]] = {
    "gateway": (),
    "monitor": (MONITOR_STATUS, MONITOR_VERSION),
    "trainer": (TRAINER_STATUS,),
    "evaluator": (),
    "deployer": (DEPLOYER_CONTROL, DEPLOYER_STATUS),
}
# Dead-letter durables beyond the consumers: the gateway's records it could not publish (its
# shadow worker connects as the gateway).
DEAD_LETTERS: dict[str, tuple[str, ...]] = {
    "gateway": ("gateway-records", "gateway-shadow-records"),
}
ACCOUNTS = tuple(EMITS)
ADMIN = "cli"
# Nobody deletes or purges a stream or deletes a message: the events stream is the audit log.
DENIED = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
)
# ... and no service changes one (the CLI, the administrator, may).
SERVICE_DENIED = ("$JS.API.STREAM.UPDATE.>",)


def durables(account: str) -> list[tuple[str, str]]:
    """(stream, durable) of each consumer the account's service runs."""
    return [(EVENTS_STREAM, f"{account}-{event}") for event in CONSUMES.get(account, ())] + [
        (stream, f"{account}-{name}") for stream, name in RECORDS.get(account, ())
    ]


def _consumer_api(stream: str, durable: str) -> list[str]:
    api = "$JS.API.CONSUMER"
    return [
        f"{api}.INFO.{stream}.{durable}",
        f"{api}.CREATE.{stream}.{durable}",
        f"{api}.CREATE.{stream}.{durable}.>",  # with its filter subject
        f"{api}.DURABLE.CREATE.{stream}.{durable}",
        f"{api}.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _bucket_api(bucket: str) -> list[str]:
    """Reading a KV bucket: gets, and ordered (ephemeral) watchers."""
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    ]


def allowed(account: str) -> list[str]:
    """The subjects `account` may publish to."""
    if account == ADMIN:  # the whole JetStream API but for DENIED (a person's tool)
        common = ["$JS.API.>", "$JS.FC.>", "$JS.ACK.>"]
    else:
        # every service creates the topology when it starts (idempotent: an existing stream
        # is left as it is; a changed one needs the CLI) and looks its buckets up
        topology = (*STREAMS, *(f"KV_{bucket}" for bucket in BUCKETS))
        consumed = sorted({stream for stream, _ in durables(account)})
        common = [
            *(f"$JS.API.STREAM.CREATE.{stream}" for stream in topology),
            *(f"$JS.API.STREAM.INFO.{stream}" for stream in consumed),  # where it stands
            # a record stream's bound, kept when the service's settings name none (bus.py)
            *(
                f"$JS.API.STREAM.INFO.{stream}"
                for stream in (PREDICTIONS_STREAM, FEEDBACK_STREAM)
                if stream not in consumed
            ),
            *(f"$JS.API.STREAM.INFO.KV_{bucket}" for bucket in BUCKETS),
            *(api for pair in durables(account) for api in _consumer_api(*pair)),
            *(api for bucket in READS.get(account, ()) for api in _bucket_api(bucket)),
            *(f"$JS.API.STREAM.MSG.GET.{stream}" for stream in GETS.get(account, ())),
            *(f"$JS.API.STREAM.INFO.{stream}" for stream in GETS.get(account, ())),
        ]
    dead = [d for _, d in durables(account)] + list(DEAD_LETTERS.get(account, ()))
    return [
        *common,
        *PUBLISHES[account],
        *(f"driftloop.events.*.{event}" for event in EMITS[account]),
        *(f"driftloop.deadletter.*.{durable}" for durable in dead),
    ]


def denied(account: str) -> list[str]:
    """What `account` may never publish, whatever `allowed` says."""
    return list(DENIED) if account == ADMIN else [*DENIED, *SERVICE_DENIED]


def inbox_prefix(url: str) -> str:
    """Where a connection to `url` takes its replies and JetStream deliveries: `_INBOX.<account>`
    when the URL names one of the accounts as its user (the only inbox that account may
    subscribe to), else NATS's default `_INBOX` (a server without these users)."""
    user = urlsplit(url).username
    return f"_INBOX.{unquote(user)}" if user and unquote(user) in ACCOUNTS else "_INBOX"


def subscribable(account: str) -> list[str]:
    """The subjects `account` may subscribe to: its own inbox (replies, JetStream deliveries)
    and the requests it answers."""
    inbox = f"_INBOX.{account}.>"
    if account == ADMIN:
        return [inbox]
    return [inbox, f"driftloop.rpc.ping.{account}", *RESPONDS[account]]


def _array(subjects: list[str]) -> str:
    """A configuration array, one subject a line when there are several."""
    if len(subjects) < 3:
        return json.dumps(subjects)
    inner = "".join(f"\n            {json.dumps(subject)}" for subject in subjects)
    return f"[{inner}\n          ]"


def render_conf(passwords: dict[str, str] | None = None) -> str:
    """The `authorization` block of a nats-server configuration. Without `passwords`, each
    password is read from the environment (`$DRIFTLOOP_NATS_PASSWORD_<ACCOUNT>`)."""
    users = []
    for account in ACCOUNTS:
        password = (
            json.dumps(passwords[account])
            if passwords is not None
            else f"$DRIFTLOOP_NATS_PASSWORD_{account.upper()}"
        )
        users.append(
            "    {\n"
            f"      user: {json.dumps(account)}\n"
            f"      password: {password}\n"
            "      permissions: {\n"
            f"        publish: {{\n          allow: {_array(allowed(account))}\n"
            f"          deny: {_array(denied(account))}\n        }}\n"
            f"        subscribe: {{allow: {_array(subscribable(account))}}}\n"
            "        allow_responses: true  # a reply to a request it received, once\n"
            "      }\n"
            "    }"
        )
    return (
        "# One user per driftloop service, each allowed only the subjects it uses "
        "(shared/driftloop/shared/permissions.py).\n"
        "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
    )
