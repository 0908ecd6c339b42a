"""A record of the partition's log as the message the partition applies: decoded (format and
mapping, streamapp/decoding.py), a control event's signature verified, a record a model failed
on refused with its reason, and a copy of the sequence topic wrapped with its source (so the
partition applies it once, streamapp/sequence.py). Nothing here changes a partition.
"""

from __future__ import annotations

from aiokafka import ConsumerRecord
from faust.types import TP

from streamapp import control, records, sequence
from streamapp.decoding import Decoder
from streamapp.partition import Copy, Message, Refused
from streamapp.records import BadEvent, Control, Event, LateLabel
from streamapp.settings import Settings
from streamapp.signing import Signer


class PoisonedRecords:
    """Records a model failed to learn half-way (Processor.rewind), by partition and offset: the
    replay after the rewind refuses each with its reason when it reaches it, once."""

    def __init__(self) -> None:
        self.reasons: dict[int, dict[int, str]] = {}

    def mark(self, partition: int, offset: int, reason: str) -> None:
        self.reasons.setdefault(partition, {})[offset] = reason

    def reason(self, partition: int, offset: int) -> str | None:
        found = self.reasons.get(partition)
        return found.get(offset) if found else None

    def spent(self, partition: int, offset: int) -> None:
        """The record was applied (dead-lettered): its poison is spent."""
        found = self.reasons.get(partition)
        if found:
            found.pop(offset, None)

    def forget(self, partition: int) -> None:
        self.reasons.pop(partition, None)  # the next owner finds them again, in its replay


class RecordReader:
    def __init__(self, settings: Settings, decoder: Decoder, signer: Signer) -> None:
        self.decoder, self.signer = decoder, signer
        self.events_topic, self.labels_topic = settings.events_topic, settings.labels_topic
        self.poisoned = PoisonedRecords()

    def source(self, record: ConsumerRecord) -> tuple[str, int] | None:
        """(events or labels, offset there) of a copy in the sequence topic."""
        return sequence.origin(record) if self.labels_topic else None

    def read(self, tp: TP, record: ConsumerRecord, at: float) -> Message:
        """The record as a message for its partition, or why it is refused: undecodable, a
        control event whose signature does not verify, or a record a model failed on."""
        source = self.source(record)
        refused = self.poisoned.reason(tp.partition, record.offset)  # forgotten once applied
        if refused is None and source is not None:
            refused = sequence.refusal(record)  # copied without its content
        message = Refused(refused) if refused is not None else self._decoded(tp, record, at, source)
        return message if source is None else Copy(source[0], source[1], message)

    def origin(self, tp: TP, record: ConsumerRecord) -> tuple[str, int]:
        """(topic, offset) where the record was written first: a copy's source, for its dead letter."""
        source = self.source(record)
        if source is None:
            return tp.topic, record.offset
        return (self.labels_topic if source[0] == sequence.LABELS else self.events_topic), source[1]

    def _decoded(
        self, tp: TP, record: ConsumerRecord, at: float, source: tuple[str, int] | None
    ) -> Event | LateLabel | Control | Refused:
        try:
            if source is None:  # a copy's were checked on the original (sequence.Forwarder)
                size = records.envelope_bytes(record.key, record.headers)
                if (
                    too_large := records.oversized_envelope(size, self.decoder.limits.max_event_bytes)
                ) is not None:
                    raise BadEvent(too_large)
            labels_only = source is not None and source[0] == sequence.LABELS
            message = self.decoder.message(record, labels_only=labels_only)
            if isinstance(message, Control):
                control.verify(self.signer, tp.partition, message, record.headers, at)
            elif self.labels_topic and source is None:
                raise BadEvent(sequence.NOT_A_COPY)
        except BadEvent as exc:
            return Refused(str(exc))
        return message
