"""The keys a KV bucket holds now, read from its stream's per-subject state.

nats.py's `KeyValue.keys()`, and the "initial values delivered" marker (None) of
`KeyValue.watch()` it rests on, can end the initial replay early: the watcher compares the
consumer's pending count with the messages it has processed, and messages already on their way
count as neither (nats-io/nats.py#842, still in 2.16). `keys()` then answers with part of the
bucket or none of it: `driftloop status` once listed no model seconds after one was applied.
The stream's own state lists every subject it holds, so nothing in flight is missed.
"""

from __future__ import annotations

from nats.js.client import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue


async def live_keys(js: JetStreamContext, kv: KeyValue, bucket: str) -> list[str]:
    """The bucket's keys whose last entry is a value (not a delete or a purge), sorted."""
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    keys = []
    for subject in sorted(info.state.subjects or {}):
        key = subject.removeprefix(prefix)
        try:
            await kv.get(key)
        except (KeyDeletedError, KeyNotFoundError):
            continue  # deleted or purged: its marker is the subject's last message
        keys.append(key)
    return keys
