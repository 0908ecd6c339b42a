"""This worker's hold on a partition: where it was recovered from and its snapshots.

Runtime only, never pickled: a snapshot holds the partition's learning, and each owner keeps
its own ownership (a restored state starts a new one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def snapshot_spread(partition: int, seq: int) -> float:
    """A factor in [0.75, 1.25) on the snapshot interval, different for each partition and each
    snapshot: partitions fed at one rate would otherwise all snapshot in the same fetched batch,
    and every event behind that batch would wait for all of them."""
    return 0.75 + 0.5 * ((partition * 0.6180339887 + seq * 0.7548776662) % 1.0)


@dataclass
class Ownership:
    created: float = field(default_factory=time.time)  # when this state was built or restored
    positioned: bool = False  # the next offset to expect is known (the state's offset + 1)
    replay_until: int = 0  # offsets below it were scored by an earlier owner: predictions replay
    events_replayed: int = 0
    recovered_at: float = 0.0
    recovered_from: str = ""
    recovery_committed: int | None = None
    snapshot_seq: int = 0
    snapshot_offset: int = -1
    snapshot_bytes: int = 0
    snapshot_at: float = 0.0  # wall clock of the state the last written snapshot holds
    #: wall clock of the last attempt, written or not: the next interval counts from it
    snapshot_tried_at: float = 0.0
    snapshot_errors: int = 0
    events_since_snapshot: int = 0
    snapshot_now: bool = False  # the models changed (a rollback): snapshot at once
    #: a snapshot is being made (in a child) of the state after this many events since the last
    snapshot_taking: int | None = None

    def snapshot_due(self, partition: int, every_events: int, every_seconds: float, now: float) -> bool:
        """After about `every_events` events or `every_seconds` seconds (see snapshot_spread).

        A new model's first interval starts when it is built, not at its first event: every
        partition of a starting worker would otherwise snapshot (and open its RocksDB) at once.
        """
        if self.snapshot_taking is not None:
            return False
        if self.snapshot_now:
            return True
        if self.events_since_snapshot == 0:
            return False
        spread = snapshot_spread(partition, self.snapshot_seq)
        since = max(self.snapshot_tried_at, self.snapshot_at) or self.created
        return (
            self.events_since_snapshot >= round(every_events * spread)
            or now - since >= every_seconds * spread
        )

    def snapshot_started(self, now: float) -> None:
        """A snapshot of the state as it is now is being made; the interval restarts now."""
        self.snapshot_taking = self.events_since_snapshot
        self.snapshot_now = False
        self.snapshot_tried_at = now

    def snapshot_taken(self, offset: int, size: int) -> None:
        """The snapshot started last is written; the events applied since it started count
        towards the next. Its age counts from when it started: the state it holds is of then."""
        self.snapshot_seq += 1
        self.snapshot_offset = offset
        self.snapshot_bytes = size
        self.snapshot_at = self.snapshot_tried_at
        self.events_since_snapshot -= self.snapshot_taking or 0
        self.snapshot_taking = None

    def snapshot_failed(self) -> None:
        """Count it and wait a full interval before trying again, not pickle on every event."""
        self.snapshot_errors += 1
        self.events_since_snapshot -= self.snapshot_taking or 0
        self.snapshot_taking = None

    @classmethod
    def restored(cls, seq: int, offset: int, size: int, created: float) -> Ownership:
        """A state loaded from snapshot #`seq`: its offset is known."""
        return cls(
            positioned=True,
            snapshot_seq=seq,
            snapshot_offset=offset,
            snapshot_bytes=size,
            snapshot_at=created,
        )
