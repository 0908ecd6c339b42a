"""Predictions in Avro say what the JSON record says (streamapp/output_format.py)."""

from __future__ import annotations

import asyncio
import io
import itertools
from typing import Any

import fastavro
import orjson
import pytest

from streamapp import avro, output_format, records
from streamapp.decoding import Schemas
from streamapp.output_format import PREDICTION_SCHEMAS, AvroPredictions, PredictionReader
from streamapp.registry import RegisteredSchema

TIMINGS = {"message_latency_s": 0.01, "predict_s": 1e-4, "learn_s": 2e-4, "end_to_end_s": 0.02}
MODEL = {"name": "hoeffding_tree", "snapshot_seq": 3, "learned": 1200, "resets": 0, "rollbacks": 1}
BASE = {"id": "txn-1", "key": "card-7", "partition": 2, "offset": 41, "model": MODEL, "learned": False}
DOCS = [
    {**BASE, "class": True, "proba": {False: 0.25, True: 0.75}, "replayed": False, "timings": TIMINGS},
    {**BASE, "key": None, "class": "fuel", "proba": {"fuel": 1.0}, "replayed": True, "timings": TIMINGS},
    {**BASE, "class": 3, "proba": {1: 0.5, 3: 0.5}, "replayed": False, "timings": TIMINGS},
    {**BASE, "value": 12.5, "replayed": False, "timings": TIMINGS},
    {**BASE, "score": 0.93, "alert": True, "replayed": False, "timings": TIMINGS},
    {
        **BASE,
        "class": False,
        "proba": {False: 0.9, True: 0.1},
        "replayed": False,
        "timings": TIMINGS,
        "challengers": {"logistic_regression": {"class": True, "proba": {False: 0.4, True: 0.6}}},
    },
]


class Registry:
    async def schema(self, schema_id: int) -> RegisteredSchema | None:
        return RegisteredSchema(output_format.SCHEMA_TEXT, "AVRO") if schema_id == 21 else None

    async def register(self, subject: str, schema: str) -> int:
        assert subject == "preds-value" and schema == output_format.SCHEMA_TEXT
        return 21

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("doc", DOCS)
def test_an_avro_prediction_reads_back_as_the_json_record(doc: dict[str, Any]) -> None:
    encoder = AvroPredictions()
    assert asyncio.run(encoder.register(Registry(), "preds")) == 21  # type: ignore[arg-type]
    raw = encoder.encode(doc)
    assert avro.schema_id(raw) == 21
    reader = PredictionReader(Schemas(Registry()))  # type: ignore[arg-type]
    as_json = orjson.loads(records.encode(doc))
    assert asyncio.run(reader.doc(raw)) == as_json
    assert asyncio.run(PredictionReader(None).doc(records.encode(doc))) == as_json


def test_no_prediction_is_written_before_the_schema_is_registered() -> None:
    with pytest.raises(RuntimeError, match="not registered"):
        AvroPredictions().encode(DOCS[0])


def reads_what_it_wrote(older: dict[str, Any], newer: dict[str, Any]) -> bool:
    """BACKWARD, the registry's rule: a consumer on `newer` reads a record written with `older`."""
    body = io.BytesIO()
    datum = {**DOCS[0], "class": True, "proba": {"false": 0.25, "true": 0.75}, "value": None, "score": None}
    fastavro.schemaless_writer(body, fastavro.parse_schema(older), datum)
    body.seek(0)
    try:
        fastavro.schemaless_reader(body, fastavro.parse_schema(older), fastavro.parse_schema(newer))
    except fastavro.read.SchemaResolutionError:
        return False
    return True


def test_every_schema_version_reads_what_the_one_before_wrote() -> None:
    for older, newer in itertools.pairwise(PREDICTION_SCHEMAS):
        assert reads_what_it_wrote(older, newer), newer
    # The check itself: an optional field added with its default passes, a required one fails.
    latest = PREDICTION_SCHEMAS[-1]
    optional = {"name": "segment", "type": ["null", "string"], "default": None}
    required = {"name": "segment", "type": "string"}
    assert reads_what_it_wrote(latest, {**latest, "fields": [*latest["fields"], optional]})
    assert not reads_what_it_wrote(latest, {**latest, "fields": [*latest["fields"], required]})
