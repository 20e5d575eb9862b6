"""Sending one alert to one destination with apprise (Slack, e-mail, JSON webhooks, ...).

apprise's `notify` blocks (HTTP, SMTP): `send` runs it in a thread of its own executor and
stops waiting after `timeout` seconds, so a destination that hangs costs its own alert a
timeout and never holds the event loop or another destination's send. A thread still stuck
past the timeout finishes on its own (apprise's socket timeouts bound it) in the executor.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apprise

from driftloop.monitor.domain.alerts import Message, Severity

logger = logging.getLogger(__name__)
SEND_THREADS = 8  # alerts in flight at once (one per destination at most)


@dataclass(frozen=True)
class Outcome:
    """One send: whether the destination took it, and if not why."""

    ok: bool
    reason: str = ""


def send_now(url: str, message: Message, *, severity: Severity, timeout: float) -> Outcome:
    """Send `message` to the apprise `url`, blocking; never raises (the reason says why)."""
    notifier = apprise.Apprise()
    try:
        if not notifier.add(url):
            return Outcome(False, f"not an apprise URL this version can send to ({_scheme(url)})")
        problems: list[str] = []

        def keep(entry: Any, _service: Any = None) -> None:
            if str(getattr(entry, "level", "")).upper() in ("WARNING", "ERROR", "CRITICAL"):
                problems.append(str(getattr(entry, "message", entry)))

        result = notifier.notify(
            body=message.body,
            title=message.title,
            notify_type=apprise.NotifyType(severity),
            timeout=timeout,
            log_callback=keep,
            log_level=logging.WARNING,
        )
    except Exception as exc:  # a plugin's own bug must not stop the worker
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    if int(result.status) == 0:
        return Outcome(True)
    status = getattr(result.status, "name", str(result.status)).lower()
    return Outcome(False, "; ".join(problems[-3:]) or f"apprise: {status}")


class Sender:
    """Sends in threads of its own (so a stuck destination never takes the default executor's
    threads the service's other blocking calls use)."""

    def __init__(self, *, timeout: float, threads: int = SEND_THREADS) -> None:
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="alerts")

    async def send(self, url: str, message: Message, *, severity: Severity) -> Outcome:
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            self._pool,
            lambda: send_now(url, message, severity=severity, timeout=self.timeout),
        )
        try:
            # a little past apprise's own deadline: its answer, if it keeps it, says more
            return await asyncio.wait_for(work, timeout=self.timeout + 1.0)
        except TimeoutError:
            return Outcome(False, f"no answer within {self.timeout:g} s")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _scheme(url: str) -> str:
    """The URL's scheme alone: the rest may hold a secret."""
    return url.split("://", 1)[0] + "://" if "://" in url else "no scheme"
