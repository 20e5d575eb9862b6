"""What kind of reason a recorded retrain decision gave: a short, bounded label for the
decisions counter (the reason text itself carries figures and times). Pure."""

from __future__ import annotations

# The policy's (domain/policy.py) suppressed reasons, by the words that say why.
_SUPPRESSED = (
    ("is still running", "cycle_running"),
    ("new labels (", "waiting_for_labels"),
    ("in cooldown until", "cooldown"),
    ("past psi_retrain", "below_threshold"),
    ("is within the floor", "within_floor"),
)
REASON_KINDS = (
    "condition",
    "retry",
    *(kind for _, kind in _SUPPRESSED),
    "other",
)


def reason_kind(*, fired: bool, reason: str) -> str:
    """One of REASON_KINDS: a fired decision is `retry` (after failed attempts at the same
    episode) or `condition` (its trigger's condition held); a suppressed one says what held
    it back (a running cycle, the cooldown, a retry waiting for labels, too few drifted
    features, a live metric within its floor); `other` for a reason this does not know."""
    if fired:
        return "retry" if "; retry after" in reason else "condition"
    for words, kind in _SUPPRESSED:
        if words in reason:
            return kind
    return "other"
