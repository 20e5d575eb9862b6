"""Records a stream discarded before a consumer received them (pure: no I/O).

A stream bounded by bytes or age with `discard: old` (predictions, feedback) drops its oldest
records at its limit whether or not every consumer has read them; JetStream then moves the
consumer on to the stream's new first record without a word. The trace it leaves: the next
record a consumer is handed has a stream sequence past the last one it was handed, and the
sequences in between are below the stream's first sequence (gone).

A jump alone is not a loss: a consumer whose filter is narrower than the stream's subjects
(the trainer's `driftloop.predictions.*` skips the shadows' `<model>.shadow` copies) or that
shares its durable with replicas (each replica is handed its share) is never handed some
sequences. So a jump is only remembered, and counted as lost once the stream's first sequence
says those sequences no longer exist. Counted in stream sequences: exact when the consumer's
filter covers the stream (the monitor's two consumers, the trainer's feedback one); for a
narrower filter, discarded records of other subjects inside the jump count too (an upper
bound, reached only by a consumer already losing records).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Jumps remembered between two checks (one a second); past it the two oldest merge, and the
# records between them, handed, may count if discarded before the check (an upper bound).
MAX_GAPS = 10_000


@dataclass
class SequenceGaps:
    """The stream sequences one consumer skipped over, until `lost(first_seq)` judges them.

    `last` is the highest stream sequence the consumer has been handed (its consumer info's
    `delivered.stream_seq` when it starts; the stream's `first_seq - 1` for a new one)."""

    last: int
    gaps: list[tuple[int, int]] = field(default_factory=list)
    checked_at: float = float("-inf")  # when the jumps were last judged (monotonic seconds)

    def handed(self, sequence: int) -> None:
        """The consumer was handed the record at stream sequence `sequence` (a redelivery,
        below `last`, changes nothing)."""
        if sequence > self.last + 1:
            self.gaps.append((self.last + 1, sequence - 1))
            if len(self.gaps) > MAX_GAPS:
                (lo, _), (_, hi) = self.gaps[0], self.gaps[1]
                self.gaps[:2] = [(lo, hi)]
        self.last = max(self.last, sequence)

    @property
    def pending(self) -> bool:
        return bool(self.gaps)

    def lost(self, first_seq: int) -> int:
        """How many remembered sequences are below `first_seq` (discarded, never handed);
        forgets every jump (the rest of each existed: another subject or replica's)."""
        count = sum(max(0, min(hi, first_seq - 1) - lo + 1) for lo, hi in self.gaps)
        self.gaps.clear()
        return count
