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
it has already applied (its last offset per source is part of its snapshots). Recovery, replay
and the oracle all read the sequence topic: it is the partition's log.

Control events (promotions, rollbacks) are written by the web views straight into the sequence
topic, signed; a record there without the headers is refused unless it is one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faust.types import TP

log = logging.getLogger(__name__)

ORIGIN = "streamapp.origin"  # b"events" or b"labels"
ORIGIN_OFFSET = "streamapp.origin.offset"
EVENTS, LABELS = "events", "labels"
NOT_A_COPY = (
    "written to the sequence topic directly: only the copies of the events and labels topics' "
    "records, and signed control events, belong there"
)

#: (topic, key, value, partition, timestamp in seconds, headers) -> the delivery future
Send = Callable[[str, bytes | None, bytes | None, int, float | None, list[tuple[str, bytes]]], Awaitable[Any]]


def sequence_topic(app_id: str) -> str:
    return f"{app_id}-sequence"


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


class Forwarder:
    """Appends the events topic's and the labels topic's records to the sequence topic."""

    def __init__(self, send: Send, sequence: str, labels_topic: str) -> None:
        self.send, self.sequence, self.labels_topic = send, sequence, labels_topic

    async def forward(
        self, tp: TP, batch: Sequence[ConsumerRecord], still_ours: Callable[[], bool]
    ) -> int | None:
        """Copy the batch, in order; the offset of the last record the broker acknowledged a
        copy of (the consumer commits after it), None if none was copied."""
        source = LABELS if tp.topic == self.labels_topic else EVENTS
        deliveries, last = [], None
        for record in batch:
            if not still_ours():
                break
            # Headers of ours that came with the record are dropped: a producer cannot forge them.
            headers = [(k, v) for k, v in record.headers or () if not k.startswith(ORIGIN)]
            headers += [(ORIGIN, source.encode()), (ORIGIN_OFFSET, str(record.offset).encode())]
            deliveries.append(
                await self.send(
                    self.sequence, record.key, record.value, tp.partition, record.timestamp / 1000, headers
                )
            )
            last = record.offset
        await asyncio.gather(*deliveries)  # acknowledged before their source offsets are committed
        return last
