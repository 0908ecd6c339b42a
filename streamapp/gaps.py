"""Offsets a consumer skipped, fetched again: Faust can drop records fetched around a rebalance
(or while a partition is paused) without moving the consumer back, and every reader of a log in
streamapp (a model learning its partition, the forwarder copying to the sequence topic) needs
every offset, in order.

A reader that sees an offset past the one it expects does not apply it: it asks here whether to
seek back to the expected one. Seeks are spaced (the records fetched before a seek still arrive
after it), and a gap that stays after MAX_RESEEKS seeks stops the worker loudly rather than let it
go on across the gap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from faust.types import TP

log = logging.getLogger(__name__)

RESEEK_EVERY = 2.0  # seconds between two seeks back to a partition's next expected offset
MAX_RESEEKS = 5


class GapError(RuntimeError):
    """A partition's log lacks offsets its reader needs; going on would not be exact."""


@dataclass
class Reseeks:
    """The seeks back over one partition's gaps, since its last applied record."""

    at: float = 0.0  # monotonic time of the last one
    without_progress: int = 0


class GapWatch:
    """The seeks back of one reader, per partition of one topic."""

    def __init__(self) -> None:
        self.reseeks: dict[int, Reseeks] = {}

    def forget(self, partition: int) -> None:
        self.reseeks.pop(partition, None)

    def progressed(self, partition: int) -> None:
        reseeks = self.reseeks.get(partition)
        if reseeks is not None:
            reseeks.without_progress = 0

    def sought(self, partition: int) -> None:
        """A seek back was just made for another reason (a rewind): the gaps it leaves wait."""
        self.reseeks[partition] = Reseeks(time.monotonic())

    def seek_to(self, tp: TP, offset: int, expected: int) -> bool:
        """Whether to seek back to `expected` now that `offset` arrived; GapError when the
        offsets never come."""
        now = time.monotonic()
        reseeks = self.reseeks.setdefault(tp.partition, Reseeks())
        if now - reseeks.at < RESEEK_EVERY:
            return False
        if reseeks.without_progress >= MAX_RESEEKS:
            raise GapError(
                f"partition {tp.partition}: offsets {expected}..{offset - 1} of {tp.topic} never "
                f"arrive after {MAX_RESEEKS} seeks: is the topic compacted or written by a "
                "transactional producer? streamapp needs every offset of the source log"
            )
        reseeks.at = now
        reseeks.without_progress += 1
        log.error(
            "partition %d: GAP: offset %d of %s arrived, %d expected; not applying it, seeking back",
            tp.partition,
            offset,
            tp.topic,
            expected,
        )
        return True
