"""Labels on their own topic (STREAMAPP_LABELS_TOPIC): the events and the labels of a partition
merged into one log, the sequence topic, which the models read instead of the events topic.

Why a log and not a rule: two topics have no order between them but time, and a rule on record
times cannot be applied as records arrive and still be repeated exactly by a recovery. A label
stamped a second before an event may be fetched a second after it; the live worker must score
the event without waiting for labels that may come days later, so it learns the label after the
event, while a recovery that replays both topics by time would learn it before, and the model
would no longer be the one that made the predictions. River's oracle (progressive validation)
needs one sequence of questions and answers; the sequence topic is that sequence, written down.

The merge rule is therefore "in the order this worker read them", made deterministic by
recording it: each record of the events topic and of the labels topic, partition p, is appended
to partition p of the sequence topic (same key, value, headers and timestamp) with two headers
naming where it came from (the topic's role and its offset there). The source offsets are
committed only once the broker acknowledged the copies, so nothing is lost; after a crash the
copies of some records may be appended twice, and the partition skips a copy whose source offset
it has already applied (its last offset per source is part of its snapshots).

The forwarder copies each source partition's offsets in order, none skipped: Faust can drop a
fetched batch around a rebalance or a pause without moving the consumer back, and a copy route
that went on from the next batch would commit past records nobody copied (seen once: 18 events
lost across a SIGKILL, every model still "exact" on a log that lacked them). So it knows the next
offset it must copy: on its first batch of a partition since it was assigned, the larger of the
group's committed offset (everything before it was copied and acknowledged) and the log's first
offset (before it, retention deleted records nobody copied: counted and logged as lost); then one
past each copy the broker acknowledged. A record below it was copied already and is skipped; one
past it is a gap: nothing more of that batch is copied, and the consumer is moved back
(streamapp/gaps.py).

Recovery, replay and the oracle all read the sequence topic: it is the partition's log.

Control events (promotions, rollbacks) are written by the web views straight into the sequence
topic, signed; a record there without the headers is refused unless it is one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import ConsumerRecord
from faust.types import TP

from streamapp import records
from streamapp.gaps import GapWatch
from streamapp.partition import PartitionState

log = logging.getLogger(__name__)

ORIGIN = "streamapp.origin"  # b"events" or b"labels"
ORIGIN_OFFSET = "streamapp.origin.offset"
#: on a copy without the record's key, value and headers (its value was missing, or it was over
#: STREAMAPP_MAX_EVENT_BYTES): the reason the partition refuses it
REFUSED = "streamapp.origin.refused"
EVENTS, LABELS = "events", "labels"
NOT_A_COPY = (
    "written to the sequence topic directly: only the copies of the events and labels topics' "
    "records, and signed control events, belong there"
)

#: (topic, key, value, partition, timestamp in seconds, headers) -> the delivery future
Send = Callable[[str, bytes | None, bytes | None, int, float | None, list[tuple[str, bytes]]], Awaitable[Any]]


class SourceOffsets(Protocol):
    """What the forwarder reads of the consumer group's offsets (the worker's consumer)."""

    async def committed_offset(self, tp: TP) -> int | None: ...

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]: ...

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]: ...


class Sources:
    """The forwarder's ties to the worker: the group's offsets, moving the consumer back, and the
    partition state that counts what went wrong in its log."""

    def __init__(
        self,
        offsets: Callable[[], SourceOffsets],
        seek: Callable[[TP, int], Awaitable[None]],
        state: Callable[[int], PartitionState | None],
    ) -> None:
        self.offsets, self.seek, self.state = offsets, seek, state


def sequence_topic(app_id: str) -> str:
    return f"{app_id}-sequence"


def refusal(record: ConsumerRecord) -> str | None:
    """Why the forwarder copied a record of the sequence topic without its content, if it did."""
    reason = dict(record.headers or ()).get(REFUSED)
    return None if reason is None else reason.decode("utf-8", "replace")


def origin(record: ConsumerRecord) -> tuple[str, int] | None:
    """(source, offset there) of a record of the sequence topic; None for one written directly."""
    found = dict(record.headers or ())
    source, offset = found.get(ORIGIN), found.get(ORIGIN_OFFSET)
    if source is None or offset is None:
        return None
    try:
        return source.decode("ascii"), int(offset.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


def refused_by_size(record: ConsumerRecord, limit: int) -> str | None:
    """Why the events topic's reader refuses the record for its sizes alone, checked in its order
    (streamapp/reading.py), if it does: such a record is copied without its content, which might
    not fit the sequence topic, or (with neither key nor value) not be sent at all."""
    envelope = records.oversized_envelope(records.envelope_bytes(record.key, record.headers), limit)
    if envelope is not None:
        return envelope
    if record.value is None:
        return records.NO_VALUE
    if len(record.value) > limit:
        return records.oversized(len(record.value), limit)
    return None


def one(offsets: Mapping[TP, int], tp: TP) -> int:
    """`tp`'s offset in the consumer's answer (keyed by aiokafka's TopicPartition or Faust's TP)."""
    return next((offset for t, offset in offsets.items() if (t.topic, t.partition) == tp), 0)


class Forwarder:
    """Appends the events topic's and the labels topic's records to the sequence topic, each
    source partition's offsets in order, none skipped (the module docstring says why)."""

    def __init__(
        self, send: Send, sequence: str, labels_topic: str, sources: Sources, max_bytes: int
    ) -> None:
        self.send, self.sequence, self.labels_topic, self.sources = send, sequence, labels_topic, sources
        #: STREAMAPP_MAX_EVENT_BYTES: a larger value is refused by its partition anyway, and its
        #: copy might not fit the sequence topic (a producer error stops the worker, and every
        #: worker the partition moves to): it is copied without it, as is a record without one
        self.max_bytes = max_bytes
        #: the next offset to copy, per source partition assigned here
        self.expected: dict[TP, int] = {}
        self.gaps = {EVENTS: GapWatch(), LABELS: GapWatch()}
        self._seeks: set[asyncio.Future[None]] = set()

    def keep_only(self, assigned: Iterable[TP]) -> None:
        """After a rebalance: a partition given away may come back after another worker copied
        more of it, so what this one knew of it is forgotten."""
        held = {TP(tp.topic, tp.partition) for tp in assigned}
        for tp in set(self.expected) - held:
            del self.expected[tp]
            self.gaps[self.role(tp)].forget(tp.partition)

    def role(self, tp: TP) -> str:
        return LABELS if tp.topic == self.labels_topic else EVENTS

    async def forward(
        self, tp: TP, batch: Sequence[ConsumerRecord], still_ours: Callable[[], bool]
    ) -> int | None:
        """Copy the batch, in order; the offset of the last record whose copy the broker
        acknowledged (the consumer commits after it), None if none is known yet."""
        tp = TP(tp.topic, tp.partition)
        expected = self.expected.get(tp)
        if expected is None:
            expected = await self.first_to_copy(tp)
            if not still_ours():
                return None
        source = self.role(tp)
        deliveries = []
        for record in batch:
            if not still_ours():
                break
            if record.offset < expected:
                continue  # copied already, and acknowledged
            if record.offset > expected:
                self.gap(tp, record.offset, expected)
                break
            deliveries.append(await self.copy(tp, source, record))
            expected += 1
        await asyncio.gather(*deliveries)  # acknowledged before their source offsets are committed
        self.expected[tp] = expected
        if deliveries:
            self.gaps[source].progressed(tp.partition)
        return expected - 1 if expected > 0 else None

    async def copy(self, tp: TP, source: str, record: ConsumerRecord) -> Any:
        """Send the record's copy; the delivery future."""
        ours = [(ORIGIN, source.encode()), (ORIGIN_OFFSET, str(record.offset).encode())]
        key, value = record.key, record.value
        refused = refused_by_size(record, self.max_bytes)
        if refused is not None:
            # Refused as the events topic's own reader refuses it; the dead letter names the source.
            key, value, headers = None, b"", [*ours, (REFUSED, refused.encode())]
        else:
            # Headers of ours that came with the record are dropped: a producer cannot forge them.
            headers = [(k, v) for k, v in record.headers or () if not k.startswith(ORIGIN)] + ours
        return await self.send(self.sequence, key, value, tp.partition, record.timestamp / 1000, headers)

    async def first_to_copy(self, tp: TP) -> int:
        """Where copying a partition starts: after what the group committed, unless retention
        deleted records from there (lost: nobody copied them)."""
        offsets = self.sources.offsets()
        committed = await offsets.committed_offset(tp)
        earliest = one(await offsets.earliest_offsets(tp), tp)
        if committed is None:
            return earliest
        end = one(await offsets.highwaters(tp), tp)
        if committed > end:
            log.error(
                "partition %d: COMMITTED AHEAD OF THE LOG: the group committed offset %d but %s "
                "ends at %d (topic recreated?); copying from its first record",
                tp.partition,
                committed,
                tp.topic,
                end,
            )
            return earliest
        if committed >= earliest:
            return committed
        lost = earliest - committed
        log.error(
            "partition %d: RETENTION LOSS: %d records of %s after offset %d were deleted before "
            "they were copied to the sequence topic; this partition's model is NOT exact any more",
            tp.partition,
            lost,
            tp.topic,
            committed - 1,
        )
        state = self.sources.state(tp.partition)
        if state is not None:
            state.events_lost_to_retention += lost
        return earliest

    def gap(self, tp: TP, offset: int, expected: int) -> None:
        """`offset` arrived before `expected` was copied: move the consumer back (in the
        background: the consumer must go on draining what it fetched before the seek)."""
        state = self.sources.state(tp.partition)
        if state is not None:
            state.gaps += 1
        if not self.gaps[self.role(tp)].seek_to(tp, offset, expected):
            return
        task = asyncio.ensure_future(self.sources.seek(tp, expected))
        self._seeks.add(task)
        task.add_done_callback(self._seeks.discard)
