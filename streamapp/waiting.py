"""The events of a partition waiting for their label, within a count, a byte and an age bound.

A late label meets the features and predictions kept when its event was scored: River's
progressive validation with delay. The bounds use the events' own bytes and record times, so a
replay of the log keeps, evicts and expires exactly the same events.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from streamapp.records import Feature

#: per contender, the prediction it made for an event (None: it joined the partition later)
Predictions = Sequence[dict[str, Any] | None]


class Waiting(NamedTuple):
    """An event waiting for its label (a tuple: cheap to build, compact to pickle)."""

    x: dict[str, Feature] | None  # None for anomaly models, which learned the event already
    predictions: Predictions
    at: float  # the record time (seconds) it arrived at
    size: int  # its bytes


@dataclass(frozen=True)
class Bounds:
    count: int = 0  # 0: keep none
    bytes: int = 0  # 0: no limit
    age: float = 0.0  # seconds of record time; 0: no limit


class WaitingEvents:
    """Oldest first; every event that leaves without its label is counted (evicted, expired)."""

    def __init__(self) -> None:
        self.events: OrderedDict[str, Waiting] = OrderedDict()
        self.bytes = 0
        self.evicted = 0  # pushed out by the count or byte bound, or by a newer event of its id
        self.expired = 0  # waited longer than the age bound

    def __len__(self) -> int:
        return len(self.events)

    def add(self, event_id: str, waiting: Waiting, bounds: Bounds) -> None:
        """Keep the event until its label comes; the oldest go first when a bound is passed."""
        self.expire(waiting.at, bounds.age)
        self.supersede(event_id)  # an id sent twice waits once, as the newest
        self.events[event_id] = waiting
        self.bytes += waiting.size
        limit = bounds.bytes or float("inf")
        while len(self.events) > bounds.count or self.bytes > limit:
            self.bytes -= self.events.popitem(last=False)[1].size
            self.evicted += 1

    def supersede(self, event_id: str) -> None:
        """A newer event of this id came: an older one waiting under the id is dropped (counted
        like any other), so a later label goes to the newest and cannot be taken for it."""
        replaced = self.events.pop(event_id, None)
        if replaced is not None:
            self.bytes -= replaced.size
            self.evicted += 1

    def take(self, event_id: str) -> Waiting | None:
        waiting = self.events.pop(event_id, None)
        if waiting is not None:
            self.bytes -= waiting.size
        return waiting

    def expire(self, now: float, max_age: float) -> None:
        """Drop the events that waited longer than `max_age` (oldest first)."""
        if not max_age or not self.events:
            return
        horizon = now - max_age
        while self.events and next(iter(self.events.values())).at < horizon:
            self.bytes -= self.events.popitem(last=False)[1].size
            self.expired += 1

    def reorder(self, order: Sequence[int | None]) -> None:
        """The contenders changed (see PartitionState.align): keep the predictions of those kept,
        in their new order (None for one that joins)."""
        for event_id, waiting in self.events.items():
            chosen = [None if i is None else waiting.predictions[i] for i in order]
            self.events[event_id] = Waiting(waiting.x, chosen, waiting.at, waiting.size)
