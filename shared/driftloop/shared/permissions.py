"""Who may publish what on NATS: one user per service (and one for the CLI), each allowed to
publish only its own events, records, KV writes and requests.

The embedded server started by `driftloop up` is configured from `render_conf` with fresh
passwords; deploy/nats.conf (docker compose) is the same document with the passwords taken
from the environment. Reading is not restricted: every service may subscribe to anything.
"""

from __future__ import annotations

import json

# Events each account may publish on `driftloop.events.<model>.<EventType>`.
EMITS: dict[str, tuple[str, ...]] = {
    "gateway": (),
    "monitor": ("DriftDetected", "PerformanceDegraded", "RetrainRequested", "AdaptationStalled"),
    "trainer": ("DataRejected", "TrainingFailed", "ModelTrained"),
    "evaluator": ("EvaluationPassed", "EvaluationFailed"),
    "deployer": ("RolloutAdvanced", "ApprovalRequired", "Approved", "Deployed", "RolledBack"),
    "cli": ("RetrainRequested",),  # `driftloop train` (bootstrap) and `retrain` (manual)
}
# Other subjects each account publishes to.
PUBLISHES: dict[str, tuple[str, ...]] = {
    "gateway": (
        "driftloop.predictions.>",
        "driftloop.feedback.>",
        "driftloop.rpc.monitor.>",  # model status
    ),
    "monitor": (),
    "trainer": (),
    "evaluator": (),
    "deployer": ("$KV.driftloop_routes.>", "driftloop.rpc.monitor.>"),  # weights; live stats
    "cli": ("$KV.driftloop_specs.>", "driftloop.rpc.>"),  # apply; ping, status, commands
}
# What every account needs: the JetStream API (streams, consumers, fetches, KV reads), acks
# and flow control, replies to requests, and dead letters.
COMMON = ("$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "_INBOX.>", "driftloop.deadletter.>")
# Nobody deletes or purges the streams: the events stream is the audit log.
DENIED = ("$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>")
ACCOUNTS = tuple(EMITS)


def allowed(account: str) -> list[str]:
    return [
        *COMMON,
        *PUBLISHES[account],
        *(f"driftloop.events.*.{event}" for event in EMITS[account]),
    ]


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
            f"        publish: {{allow: {json.dumps(allowed(account))}, "
            f"deny: {json.dumps(list(DENIED))}}}\n"
            '        subscribe: {allow: [">"]}\n'
            "      }\n"
            "    }"
        )
    return (
        "# One user per driftloop service; each publishes only its own events "
        "(shared/driftloop/shared/permissions.py).\n"
        "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
    )
