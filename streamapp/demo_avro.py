"""`streamapp produce --format avro`: a demo dataset as a bank's Avro topic would carry it, so
`FORMAT=avro make run` shows the mapping and the registry at work on data of another shape.

An event is a record `<Dataset>Event` of its own field names: `txn_id`, `entity` (the card),
the features as top-level fields, `label` (null until known) and `event_time`
(timestamp-millis); a late label is a record `<Dataset>Verdict` {txn_id, label}. Both are
registered in the registry (the event under the topic's value subject, the verdict under its
record name, RecordNameStrategy) and framed in Confluent's wire format. WORKER_MAPPING is how a
worker reads them: the STREAMAPP_* settings, nothing coded.
"""

from __future__ import annotations

import io
import re
import time
from typing import Any

import fastavro
import orjson

from streamapp import avro, datasets
from streamapp.registry import SchemaRegistry

WORKER_MAPPING = {
    "STREAMAPP_INPUT_FORMAT": "avro",
    "STREAMAPP_ID_FIELD": "txn_id",
    "STREAMAPP_LABEL_FIELD": "label",
    "STREAMAPP_FEATURES": "",
    "STREAMAPP_EXCLUDE": "entity",
    "STREAMAPP_TIMESTAMP_FIELD": "event_time",
}
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _avro_type(value: Any) -> Any:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "double"  # an integer feature may be a float in the next event
    return "string"


def schemas(dataset: str, sample: datasets.Sample) -> tuple[dict[str, Any], dict[str, Any]]:
    """(event schema, verdict schema) for a dataset, from the kinds of its first sample."""
    bad = [name for name in sample.x if not _AVRO_NAME.fullmatch(name)]
    if bad:
        raise ValueError(f"dataset {dataset!r} has features Avro cannot name: {bad[:5]}")
    name = dataset.capitalize()
    label = ["null", _avro_type(sample.y)]
    event = {
        "type": "record",
        "name": f"{name}Event",
        "namespace": "streamapp.demo",
        "fields": [
            {"name": "txn_id", "type": "string"},
            {"name": "entity", "type": "string"},
            *({"name": k, "type": _avro_type(v)} for k, v in sample.x.items()),
            {"name": "label", "type": label, "default": None},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
    }
    verdict = {
        "type": "record",
        "name": f"{name}Verdict",
        "namespace": "streamapp.demo",
        "fields": [{"name": "txn_id", "type": "string"}, {"name": "label", "type": label[1]}],
    }
    return event, verdict


class AvroFraming:
    """The JSON contract messages of `producer.messages` re-written as the demo's Avro records."""

    def __init__(self, event: dict[str, Any], verdict: dict[str, Any], ids: tuple[int, int]) -> None:
        self.event, self.verdict = fastavro.parse_schema(event), fastavro.parse_schema(verdict)
        self.event_id, self.verdict_id = ids

    @classmethod
    async def register(cls, registry: SchemaRegistry, topic: str, dataset: str, seed: int) -> AvroFraming:
        event, verdict = schemas(dataset, next(iter(datasets.load(dataset, seed=seed, limit=1))))
        ids = (
            await registry.register(f"{topic}-value", orjson.dumps(event).decode()),
            await registry.register(f"streamapp.demo.{verdict['name']}", orjson.dumps(verdict).decode()),
        )
        return cls(event, verdict, ids)

    def frame(self, key: bytes | None, value: bytes) -> bytes:
        doc = orjson.loads(value)
        body = io.BytesIO()
        if "x" not in doc:  # a late label
            fastavro.schemaless_writer(body, self.verdict, {"txn_id": doc["id"], "label": doc["y"]})
            return avro.frame(self.verdict_id, body.getvalue())
        record = {
            "txn_id": doc["id"],
            "entity": (key or b"").decode(),
            **doc["x"],
            "label": doc.get("y"),
            "event_time": int(time.time() * 1000),
        }
        fastavro.schemaless_writer(body, self.event, record)
        return avro.frame(self.event_id, body.getvalue())
