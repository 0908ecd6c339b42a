"""Avro in Confluent's wire format, and the decoder that fetches writer schemas (streamapp/avro.py,
streamapp/decoding.py). The registry here is a stand-in object; the real one (Apicurio) is in the
integration tests."""

from __future__ import annotations

import asyncio
import datetime
import io
from typing import Any

import fastavro
import orjson
import pytest
from aiokafka import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp import avro, control, decoding
from streamapp.decoding import Decoder, Schemas
from streamapp.mapping import Mapping
from streamapp.records import BadEvent, Control, Event, Limits
from streamapp.registry import RegisteredSchema, RegistryUnavailable
from streamapp.settings import Settings

DEVICE = {"type": "record", "name": "Device", "fields": [{"name": "os", "type": "string"}]}
TXN_V1 = {
    "type": "record",
    "name": "Txn",
    "namespace": "bank",
    "fields": [
        {"name": "txn_id", "type": "long"},
        {"name": "amount", "type": "double"},
        {"name": "merchant", "type": {"type": "enum", "name": "Merchant", "symbols": ["grocery", "fuel"]}},
        {"name": "device", "type": DEVICE},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "is_fraud", "type": ["null", "boolean"], "default": None},
    ],
}
TXN_V2 = {
    **TXN_V1,
    "fields": [*TXN_V1["fields"], {"name": "channel", "type": ["null", "string"], "default": None}],
}
LIMITS = Limits()


def encode(schema: dict[str, Any], schema_id: int, record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return avro.frame(schema_id, body.getvalue())


def txn(**changes: Any) -> dict[str, Any]:
    return {
        "txn_id": 7,
        "amount": 12.5,
        "merchant": "fuel",
        "device": {"os": "ios"},
        "event_time": 1_790_000_000_000,
        "is_fraud": None,
        **changes,
    }


class Registry:
    """Answers from a dict of id -> schema; `down` lookups fail before it answers."""

    def __init__(self, schemas: dict[int, Any], down: int = 0) -> None:
        self.schemas, self.down, self.asked = schemas, down, []

    async def schema(self, schema_id: int) -> RegisteredSchema | None:
        self.asked.append(schema_id)
        if self.down:
            self.down -= 1
            raise RegistryUnavailable("connection refused")
        found = self.schemas.get(schema_id)
        if found is None:
            return None
        if isinstance(found, RegisteredSchema):
            return found
        return RegisteredSchema(orjson.dumps(found).decode(), "AVRO")

    async def close(self) -> None:
        pass


def record(value: bytes, offset: int = 0, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord:
    return ConsumerRecord(
        "events", 0, offset, 1_790_000_000_000, 0, b"k", value, None, 0, len(value), headers or []
    )


def decoder(registry: Registry, **env: str) -> Decoder:
    mapping = Mapping.from_settings(
        Settings.from_env(
            {
                "STREAMAPP_ID_FIELD": "txn_id",
                "STREAMAPP_LABEL_FIELD": "is_fraud",
                "STREAMAPP_FEATURES": "",
                "STREAMAPP_TIMESTAMP_FIELD": "event_time",
                **env,
            }
        )
    )
    return Decoder(mapping, LIMITS, Schemas(registry))  # type: ignore[arg-type]


def test_records_of_two_schema_versions_read_with_their_own_writer_schema() -> None:
    registry = Registry({1: TXN_V1, 2: TXN_V2})
    d = decoder(registry)
    batch = [
        record(encode(TXN_V1, 1, txn())),
        record(encode(TXN_V2, 2, txn(channel="web", is_fraud=True)), 1),
    ]
    asyncio.run(d.prepare(batch))
    first, second = (d.message(r) for r in batch)
    assert isinstance(first, Event) and first.id == "7" and first.y is None
    assert first.x == {"amount": 12.5, "merchant": "fuel", "device.os": "ios"}
    assert first.ts == 1_790_000_000.0  # timestamp-millis arrives as a datetime
    assert isinstance(second, Event) and second.x["channel"] == "web" and second.y is True
    asyncio.run(d.prepare(batch))
    assert registry.asked == [1, 2], "a schema id is looked up once"


def test_an_unknown_id_a_wrong_magic_byte_and_a_corrupt_body_are_each_a_reason() -> None:
    d = decoder(Registry({1: TXN_V1}))
    good = encode(TXN_V1, 1, txn())
    batch = [
        record(encode(TXN_V1, 99, txn())),
        record(b'{"txn_id": 1}'),
        record(good[:-3]),
        record(good + b"\0"),
    ]
    asyncio.run(d.prepare(batch))
    reasons = []
    for r in batch:
        with pytest.raises(BadEvent) as refused:
            d.message(r)
        reasons.append(str(refused.value))
    assert reasons[0] == "unknown schema id 99: the registry has no such schema"
    assert "first byte 0x7b, not the magic byte 0x00" in reasons[1]
    assert reasons[2].startswith("Avro body does not decode with schema id 1")
    assert reasons[3] == "Avro body has 1 bytes left over after the record of schema id 1"


def test_the_registry_being_down_holds_the_records_until_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoding, "RETRY_SECONDS", (0.0,))
    registry = Registry({1: TXN_V1}, down=3)
    d = decoder(registry)
    batch = [record(encode(TXN_V1, 1, txn()))]
    asyncio.run(d.prepare(batch))
    assert registry.asked == [1, 1, 1, 1]
    assert isinstance(d.message(batch[0]), Event)
    # Given up only when the records are no longer wanted (their partition went elsewhere).
    stuck = Registry({}, down=10**9)
    d = decoder(stuck)
    calls = iter(range(5))
    asyncio.run(d.prepare([record(encode(TXN_V1, 5, txn()))], lambda: next(calls) < 4))
    assert len(stuck.asked) == 4


@pytest.mark.parametrize(
    ("registered", "reason"),
    [
        ({"type": "array", "items": "null"}, "an array of items that take no bytes"),
        (
            {"type": "map", "values": {"type": "record", "name": "E", "fields": []}},
            "a map of items that take no bytes",
        ),
        (RegisteredSchema('{"type": "object"}', "JSON"), "schema id 3 is a JSON schema, not Avro"),
        (RegisteredSchema("{not json", "AVRO"), "schema id 3 is not a usable Avro schema"),
        (
            {"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]},
            "not a usable Avro schema",
        ),
    ],
)
def test_a_schema_that_cannot_be_read_safely_is_refused_with_its_records(
    registered: Any, reason: str
) -> None:
    d = decoder(Registry({3: registered}))
    r = record(avro.frame(3, b"\x02\x00"))
    asyncio.run(d.prepare([r]))
    with pytest.raises(BadEvent, match=None) as refused:
        d.message(r)
    assert reason in str(refused.value)


def test_a_signed_control_event_is_read_as_json_on_an_avro_topic() -> None:
    d = decoder(Registry({}))
    value = b'{"id": "control-1", "control": "promote", "model": "logistic_regression"}'
    r = record(value, headers=[(control.SIGNATURE, b"00"), (control.EXPIRES, b"1")])
    asyncio.run(d.prepare([r]))
    assert isinstance(d.message(r), Control)  # its signature is the processor's to verify


def test_record_time_is_the_mappings_else_kafkas() -> None:
    d = decoder(Registry({}))
    timed = Event("a", {}, None, 5.0)
    assert d.time(timed, 9.0) == 5.0
    assert d.time(Event("a", {}, None, None), 9.0) == 9.0
    contract = Decoder(Mapping(), LIMITS)
    assert contract.time(timed, 9.0) == 9.0, (
        "the contract's ts is the time only with STREAMAPP_TIMESTAMP_FIELD=ts"
    )


bank_records = st.fixed_dictionaries(
    {
        "txn_id": st.integers(-(2**63), 2**63 - 1),
        "amount": st.floats(allow_nan=False, allow_infinity=False, width=64),
        "merchant": st.sampled_from(["grocery", "fuel"]),
        "device": st.fixed_dictionaries({"os": st.text(max_size=20)}),
        "event_time": st.integers(0, 4_000_000_000_000),
        "is_fraud": st.none() | st.booleans(),
    }
)


@settings(max_examples=200, deadline=None)
@given(txn=bank_records)
def test_what_fastavro_writes_reads_back(txn: dict[str, Any]) -> None:
    writer = avro.writer_schema(1, orjson.dumps(TXN_V1).decode())
    raw = encode(TXN_V1, 1, txn)
    assert avro.schema_id(raw) == 1
    back = avro.decode(raw, writer)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    millis = (back["event_time"] - epoch) // datetime.timedelta(milliseconds=1)
    assert {**back, "event_time": millis} == txn


@settings(max_examples=500, deadline=None)
@given(
    body=st.binary(max_size=200), schema=st.sampled_from([TXN_V1, TXN_V2, {"type": "array", "items": "long"}])
)
def test_any_bytes_after_the_header_decode_or_are_a_reason(body: bytes, schema: dict[str, Any]) -> None:
    writer = avro.writer_schema(4, orjson.dumps(schema).decode())
    try:
        avro.decode(avro.frame(4, body), writer)
    except BadEvent as exc:
        assert str(exc)
