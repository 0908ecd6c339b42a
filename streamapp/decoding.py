"""A Kafka record as one of streamapp's messages: its format (JSON, or Avro in Confluent's wire
format), then its mapping (streamapp/mapping.py), and the record time it is learned at.

streamapp's own contract ({"id", "x", "y"} in JSON) is read by records.parse, as it always was.
Control events are always that contract (the web views write them, signed), so a record that
carries a control signature is read as one whatever the topic's format.

Avro needs the writer schemas: `prepare` fetches, before a batch is applied, those its records
name and this worker has not seen (a schema id names one schema for good, so they are kept).
While the registry cannot answer, `prepare` waits and retries: the records are neither applied
nor dead-lettered, and nothing is lost. An id the registry does not know is an answer: the
records naming it are dead-lettered with that reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka import ConsumerRecord

from streamapp import avro, control, records
from streamapp.mapping import Mapping
from streamapp.records import Control, Event, LateLabel, Limits
from streamapp.registry import RegistryUnavailable, SchemaRegistry

log = logging.getLogger(__name__)

Message = Event | LateLabel | Control
#: unknown schema ids remembered (each costs the registry one lookup when forgotten)
UNKNOWN_IDS_KEPT = 10_000
RETRY_SECONDS = (0.5, 1, 2, 5, 10, 30)


class Schemas:
    """The writer schemas of the records seen, by registry id."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self.known: dict[int, avro.WriterSchema] = {}
        self.unknown: OrderedDict[int, avro.WriterSchema] = OrderedDict()

    def get(self, schema_id: int) -> avro.WriterSchema | None:
        return self.known.get(schema_id) or self.unknown.get(schema_id)

    async def fetch(self, ids: Iterable[int], still_wanted: Callable[[], bool] = lambda: True) -> None:
        """Look up the ids not seen yet; while the registry is unavailable, wait and retry (as
        long as the records are still wanted: a rebalance may take their partition away)."""
        for schema_id in sorted(set(ids)):
            attempt = 0
            while self.get(schema_id) is None and still_wanted():
                try:
                    await self._fetch(schema_id)
                except RegistryUnavailable as exc:
                    delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                    log.error("schema id %d: %s; the records wait, retrying in %.1f s", schema_id, exc, delay)
                    attempt += 1
                    await asyncio.sleep(delay)

    async def _fetch(self, schema_id: int) -> None:
        found = await self.registry.schema(schema_id)
        if found is None:
            self.unknown[schema_id] = avro.WriterSchema(
                schema_id, None, f"unknown schema id {schema_id}: the registry has no such schema"
            )
            while len(self.unknown) > UNKNOWN_IDS_KEPT:
                self.unknown.popitem(last=False)
            return
        writer = avro.writer_schema(schema_id, found.text, found.schema_type)
        if writer.refused:
            log.error("%s", writer.refused)
        self.known[schema_id] = writer


class Decoder:
    """Format and mapping of the events topic (and of the labels topic, whose records are read
    as late labels only)."""

    def __init__(self, mapping: Mapping, limits: Limits, schemas: Schemas | None = None) -> None:
        self.mapping = mapping
        self.limits = limits
        self.schemas = schemas
        self.contract = mapping.is_contract and schemas is None
        #: the record time comes from the record (STREAMAPP_TIMESTAMP_FIELD), else Kafka's
        self.record_time = mapping.timestamp_path is not None

    @classmethod
    def from_settings(cls, settings: Any, limits: Limits) -> Decoder:
        schemas = Schemas(SchemaRegistry.from_settings(settings)) if settings.input_format == "avro" else None
        return cls(Mapping.from_settings(settings), limits, schemas)

    async def prepare(
        self, batch: Sequence[ConsumerRecord], still_wanted: Callable[[], bool] = lambda: True
    ) -> None:
        """Fetch the writer schemas the batch's Avro records name (nothing to do for JSON)."""
        if self.schemas is None:
            return
        ids = set()
        for record in batch:
            value = record.value
            if value and len(value) >= avro.HEADER.size and value[0] == avro.MAGIC:
                schema_id = avro.schema_id(value)
                if self.schemas.get(schema_id) is None:
                    ids.add(schema_id)
        if ids:
            await self.schemas.fetch(ids, still_wanted)

    def message(self, record: ConsumerRecord, labels_only: bool = False) -> Message:
        """The record as a message, or BadEvent with the reason (the control signature is the
        processor's to verify); `labels_only`: a record of the labels topic."""
        if self.contract and not labels_only:
            return records.parse(record.value, self.limits)
        raw = records.checked_size(record.value, self.limits)
        if not labels_only and any(name == control.SIGNATURE for name, _ in record.headers or ()):
            return records.parse(raw, self.limits)
        doc = self._decode(raw)
        if labels_only:
            return self.mapping.late_label(doc, self.limits)
        return self.mapping.message(doc, len(raw), self.limits)

    async def close(self) -> None:
        if self.schemas is not None:
            await self.schemas.registry.close()

    def time(self, message: object, kafka_time: float) -> float:
        """When the message happened, for the bounds in record time (a label's wait, rollbacks)."""
        message = getattr(message, "message", message)  # a copy's own (streamapp/sequence.py)
        if self.record_time and isinstance(message, Event | LateLabel) and message.ts is not None:
            return message.ts
        return kafka_time

    def _decode(self, raw: bytes) -> Any:
        if self.schemas is None:
            return records.json_value(raw)
        schema_id = avro.schema_id(raw)
        writer = self.schemas.get(schema_id)
        if writer is None:  # prepare() was not given this record: a bug, not the record's fault
            raise RuntimeError(f"schema id {schema_id} was not fetched before its record was read")
        return avro.decode(raw, writer)
