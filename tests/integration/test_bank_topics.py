"""A bank's own topic: Avro records of its own schema (other field names, a nested record, its own
event time) in Confluent's wire format, schemas in a real registry (Apicurio), a worker
configured only by environment variables, and River's progressive validation as the oracle."""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import fastavro
from aiokafka import AIOKafkaProducer, ConsumerRecord

from streamapp import datasets
from streamapp.settings import Settings
from tests.integration.chaos import Cluster, assert_exact
from tests.integration.cluster import BOOTSTRAP, read_topic, unique_env, wait_for
from tests.integration.registry import subject_prefix

DEVICE = {
    "type": "record",
    "name": "Device",
    "fields": [{"name": "distance_km", "type": "double"}, {"name": "online", "type": "boolean"}],
}
TXN_V1: dict[str, Any] = {
    "type": "record",
    "name": "CardTransaction",
    "namespace": "com.bank.cards",
    "fields": [
        {"name": "txn_id", "type": "long"},
        {"name": "card_id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "merchant", "type": "string"},
        {"name": "hour", "type": "int"},
        {"name": "velocity_1h", "type": "int"},
        {"name": "device", "type": DEVICE},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "is_fraud", "type": ["null", "boolean"], "default": None},
    ],
}
# A BACKWARD-compatible evolution: a new optional field, which the mapping takes as a feature.
TXN_V2 = {
    **TXN_V1,
    "fields": [*TXN_V1["fields"], {"name": "channel", "type": ["null", "string"], "default": None}],
}
VERDICT = {  # an analyst's verdict, days later, on the same topic (its own record name and subject)
    "type": "record",
    "name": "Verdict",
    "namespace": "com.bank.cards",
    "fields": [{"name": "txn_id", "type": "long"}, {"name": "is_fraud", "type": "boolean"}],
}
MAPPING = {
    "input_format": "avro",
    "id_field": "txn_id",
    "label_field": "is_fraud",
    "features": "",  # every field but these:
    "exclude": "card_id",
    "timestamp_field": "event_time",
    "output_format": "avro",
}
EVENTS, UNKNOWN_ID = 2400, 987_654


def register(registry: str, subject: str, schema: dict[str, Any]) -> int:
    request = urllib.request.Request(
        f"{registry}/subjects/{subject}/versions",
        data=json.dumps({"schema": json.dumps(schema)}).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.load(response)["id"])


def latest(registry: str, subject: str) -> str:
    with urllib.request.urlopen(f"{registry}/subjects/{subject}/versions/latest", timeout=10) as response:
        return str(json.load(response)["schema"])


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return b"\0" + schema_id.to_bytes(4, "big") + body.getvalue()


def bank_stream(events: int) -> list[tuple[str, dict[str, Any], bool | None]]:
    """(card, record, verdict): the card stream as the bank's records, one a second up to now;
    every fifth event's label comes later as a verdict (which has no time of its own: its Kafka
    timestamp is its time, so the events must be recent or they expire waiting for it)."""
    out, start = [], int(time.time() * 1000) - 1000 * events
    for n, sample in enumerate(datasets.load("card", seed=7, limit=events)):
        x = sample.x
        record = {
            "txn_id": 10_000_000 + n,
            "card_id": sample.key,
            "amount": x["amount"],
            "merchant": x["merchant_category"],
            "hour": x["hour"],
            "velocity_1h": x["velocity_1h"],
            "device": {"distance_km": x["distance_from_home_km"], "online": x["online"]},
            "event_time": start + 1000 * n,
            "is_fraud": None if n % 5 == 0 else sample.y,
        }
        out.append((sample.key, record, sample.y if n % 5 == 0 else None))
    return out


def as_contract(record: dict[str, Any], verdict: bool | None = None) -> dict[str, Any]:
    """What the mapping must make of a record, written out by hand (the oracle's own reading)."""
    if verdict is not None:
        return {"id": str(record["txn_id"]), "y": verdict}
    x = {
        "amount": record["amount"],
        "merchant": record["merchant"],
        "hour": record["hour"],
        "velocity_1h": record["velocity_1h"],
        "device.distance_km": record["device"]["distance_km"],
        "device.online": record["device"]["online"],
    }
    if record.get("channel") is not None:
        x["channel"] = record["channel"]
    doc: dict[str, Any] = {"id": str(record["txn_id"]), "x": x}
    if record["is_fraud"] is not None:
        doc["y"] = record["is_fraud"]
    return doc


async def send(topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def test_avro_records_of_a_banks_own_schema_through_a_real_registry(
    tmp_path: Path, schema_registry: str
) -> None:
    env = unique_env(4, schema_registry_url=schema_registry, **MAPPING)
    settings = Settings.from_env(env)
    subject = f"{settings.events_topic}-value"
    v1 = register(schema_registry, subject, TXN_V1)
    verdicts = register(schema_registry, f"{subject_prefix('verdict')}-com.bank.cards.Verdict", VERDICT)
    stream = bank_stream(EVENTS)
    written: dict[bytes, dict[str, Any]] = {}  # value -> the contract document it must be read as

    def messages(part: list[tuple[str, dict[str, Any], bool | None]], schema_id: int, schema: dict[str, Any]):
        out, late = [], []
        for card, record, verdict in part:
            value = framed(schema_id, schema, record)
            written[value] = as_contract(record)
            out.append((card.encode(), value))
            if verdict is not None:  # 3 events later, its verdict
                label = framed(verdicts, VERDICT, {"txn_id": record["txn_id"], "is_fraud": verdict})
                written[label] = as_contract(record, verdict)
                late.append((card.encode(), label))
            if len(late) > 3:
                out.append(late.pop(0))
        return out + late

    cluster = Cluster(env, tmp_path)
    try:
        cluster.start("w1")
        half = EVENTS // 2
        asyncio.run(send(settings.events_topic, messages(stream[:half], v1, TXN_V1)))
        wait_for(
            "the worker to apply the first half",
            lambda: sum(s["events_seen"] for s, _ in cluster.served().values()) >= half,
            120,
            cluster.logs,
        )
        # Mid-stream, without a restart: a new version of the schema, and three records to refuse.
        v2 = register(schema_registry, subject, TXN_V2)
        assert v2 != v1
        second = [
            (card, {**record, "channel": "web" if n % 2 else None}, verdict)
            for n, (card, record, verdict) in enumerate(stream[half:])
        ]
        good = framed(v2, TXN_V2, second[0][1])
        bad = [
            (b"card-x", framed(UNKNOWN_ID, TXN_V2, second[0][1])),  # a schema id nobody registered
            (b"card-x", good[:-4]),  # a body cut short
            (b"card-x", b'{"txn_id": 1, "amount": 2.0}'),  # JSON where Avro is expected
        ]
        asyncio.run(send(settings.events_topic, bad + messages(second, v2, TXN_V2)))

        def decode(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any] | None:
            return written.get(record.value)

        # The predictions are Avro too, under the schema the worker registered for their topic.
        writer = fastavro.parse_schema(
            json.loads(latest(schema_registry, f"{settings.predictions_topic}-value"))
        )

        def read_prediction(value: bytes) -> dict[str, Any]:
            assert value[:1] == b"\0", value[:20]
            doc = fastavro.schemaless_reader(io.BytesIO(value[5:]), writer, None)
            # As the JSON record: no nulls for what the task does not have; labels as JSON keys.
            return {k: v for k, v in doc.items() if v is not None or k == "key"}

        assert_exact(cluster, settings, decode=decode, read_prediction=read_prediction)

        letters = [r for recs in read_topic(settings.deadletter_topic, 4).values() for r in recs]
        reasons = sorted(dict(r.headers)["streamapp.error.reason"].decode() for r in letters)
        assert len(reasons) == 3, reasons
        assert reasons[0].startswith(f"Avro body does not decode with schema id {v2}"), reasons
        assert reasons[1].startswith("not Confluent's Avro wire format: first byte 0x7b"), reasons
        assert reasons[2] == f"unknown schema id {UNKNOWN_ID}: the registry has no such schema", reasons
        assert sorted(r.value for r in letters) == sorted(value for _, value in bad), (
            "refused bytes kept as they were"
        )
        served = [s for s, _ in cluster.served().values()]
        assert sum(s["labels_late"] for s in served) == EVENTS // 5
    finally:
        cluster.stop_all()
