"""How prediction records are written: JSON (the default), or Avro in Confluent's wire format
(STREAMAPP_OUTPUT_FORMAT=avro) with the schema below, registered at start under the topic's
value subject ("<predictions topic>-value", Confluent's TopicNameStrategy).

The schema evolves BACKWARD-compatibly, the registry's default rule: a new version may only add
fields with defaults (or drop some), so a consumer on the new schema reads every record written
before it. PREDICTION_SCHEMAS keeps every version ever released, oldest first; the tests check
each against the next, and a change the registry would refuse fails the worker at start.

The Avro record says what the JSON one says. A class probability is a map from the class label
as JSON writes it (true, 1, "fraud" become "true", "1", "fraud") to its probability; fields a
task does not have are null (JSON leaves them out), and `as_json_doc` turns a decoded record
back into the JSON document (the audit replay compares recorded decisions that way).
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import orjson

from streamapp import avro
from streamapp.decoding import Schemas
from streamapp.records import BadEvent
from streamapp.registry import SchemaRegistry

_LABEL = ["boolean", "long", "double", "string"]
_SCORES = [
    {"name": "class", "type": ["null", *_LABEL], "default": None},
    {"name": "proba", "type": ["null", {"type": "map", "values": "double"}], "default": None},
    {"name": "value", "type": ["null", "double"], "default": None},
    {"name": "score", "type": ["null", "double"], "default": None},
]
PREDICTION_V1: dict[str, Any] = {
    "type": "record",
    "name": "Prediction",
    "namespace": "streamapp",
    "doc": "One event scored by its partition's champion (docs/messages.md, Predictions).",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "key", "type": ["null", "string"], "default": None},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {
            "name": "model",
            "type": {
                "type": "record",
                "name": "ModelVersion",
                "fields": [
                    {"name": "name", "type": "string"},
                    {"name": "snapshot_seq", "type": "long"},
                    {"name": "learned", "type": "long"},
                    {"name": "resets", "type": "long"},
                    {"name": "rollbacks", "type": "long"},
                ],
            },
        },
        *_SCORES,
        {"name": "alert", "type": ["null", "boolean"], "default": None},
        {"name": "learned", "type": "boolean"},
        {"name": "replayed", "type": "boolean"},
        {
            "name": "timings",
            "type": {
                "type": "record",
                "name": "Timings",
                "fields": [
                    {"name": name, "type": "double"}
                    for name in ("message_latency_s", "predict_s", "learn_s", "end_to_end_s")
                ],
            },
        },
        {
            "name": "challengers",
            "type": [
                "null",
                {"type": "map", "values": {"type": "record", "name": "ChallengerScore", "fields": _SCORES}},
            ],
            "default": None,
        },
    ],
}
#: every released version, oldest first; the last is written
PREDICTION_SCHEMAS = [PREDICTION_V1]
#: the exact text registered (Apicurio gives the same schema with other whitespace a new id)
SCHEMA_TEXT = orjson.dumps(PREDICTION_SCHEMAS[-1]).decode()
_PARSED = fastavro.parse_schema(PREDICTION_SCHEMAS[-1])
_OPTIONAL = ("class", "proba", "value", "score", "alert", "challengers")  # absent in JSON when null


def _scores(prediction: dict[str, Any]) -> dict[str, Any]:
    proba = prediction.get("proba")
    return {
        "class": prediction.get("class"),
        "proba": None if proba is None else {_json_key(label): p for label, p in proba.items()},
        "value": prediction.get("value"),
        "score": prediction.get("score"),
    }


def _json_key(label: Any) -> str:
    return label if isinstance(label, str) else orjson.dumps(label).decode()


class AvroPredictions:
    """Prediction records as Avro; `register` (at start) gives the schema id they carry."""

    def __init__(self) -> None:
        self.schema_id: int | None = None

    async def register(self, registry: SchemaRegistry, topic: str) -> int:
        """The schema's id under the topic's value subject; ValueError when the registry refuses
        it (incompatible with the versions before)."""
        self.schema_id = await registry.register(f"{topic}-value", SCHEMA_TEXT)
        return self.schema_id

    def encode(self, doc: dict[str, Any]) -> bytes:
        if self.schema_id is None:
            raise RuntimeError("the prediction schema was not registered before the first prediction")
        datum = {**doc, **_scores(doc), "alert": doc.get("alert")}
        challengers = doc.get("challengers")
        datum["challengers"] = (
            None if challengers is None else {n: _scores(c) for n, c in challengers.items()}
        )
        body = io.BytesIO()
        fastavro.schemaless_writer(body, _PARSED, datum)
        return avro.frame(self.schema_id, body.getvalue())


def as_json_doc(record: dict[str, Any]) -> dict[str, Any]:
    """A decoded Avro prediction as the JSON record says it (nulls of absent fields left out)."""
    doc = {k: v for k, v in record.items() if not (k in _OPTIONAL and v is None)}
    if doc.get("challengers") is not None:
        doc["challengers"] = {
            name: {k: v for k, v in c.items() if v is not None} for name, c in doc["challengers"].items()
        }
    return doc


class PredictionReader:
    """Recorded prediction records as JSON documents, whichever format they were written in
    (an Avro one is read with the schema its id names, through the registry)."""

    def __init__(self, schemas: Schemas | None) -> None:
        self.schemas = schemas

    @classmethod
    def from_settings(cls, settings: Any) -> PredictionReader:
        avro_out = settings.output_format == "avro"
        return cls(Schemas(SchemaRegistry.from_settings(settings)) if avro_out else None)

    async def doc(self, raw: bytes | None) -> Any:
        """The record's document; None for one that cannot be read (it matches no decision)."""
        try:
            if self.schemas is None or not raw or raw[:1] != b"\0":
                return orjson.loads(raw or b"null")
            schema_id = avro.schema_id(raw)
            await self.schemas.fetch([schema_id])
            writer = self.schemas.get(schema_id)
            return None if writer is None else as_json_doc(avro.decode(raw, writer))
        except (orjson.JSONDecodeError, BadEvent):
            return None

    async def close(self) -> None:
        if self.schemas is not None:
            await self.schemas.registry.close()
