"""Bearer tokens for writes and control actions (`DRIFTLOOP_API_TOKENS`, comma-separated).

Only SHA-256 digests of the tokens are kept in memory, and a presented token is compared with
each digest in constant time, so neither a memory dump nor response timing reveals a token.
With no tokens configured every request is accepted: the services then listen on loopback
only (the gateway refuses any other address; see docs/decisions.md)."""

from __future__ import annotations

import hashlib
import hmac


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenSet:
    def __init__(self, setting: str | None = None) -> None:
        self._digests = [_digest(t.strip()) for t in (setting or "").split(",") if t.strip()]

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def accepts(self, token: object) -> bool:
        if not self._digests:
            return True
        if not isinstance(token, str) or not token:
            return False
        given = _digest(token)
        matched = False
        for digest in self._digests:  # no early exit: the time does not depend on the match
            matched |= hmac.compare_digest(given, digest)
        return matched

    def refusal(self, token: object) -> str:
        """Why `token` is refused (never echoes it)."""
        if not isinstance(token, str) or not token:
            return "a token is required: set DRIFTLOOP_API_TOKEN to one of DRIFTLOOP_API_TOKENS"
        return "this token is not accepted"
