"""The Avro demo (`FORMAT=avro make run`): the card stream as a bank's Avro records, read back
through the worker's own decoding and mapping as the very events of the JSON demo."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord

from streamapp import datasets, producer
from streamapp.decoding import Decoder, Schemas
from streamapp.demo_avro import WORKER_MAPPING, AvroFraming
from streamapp.mapping import Mapping
from streamapp.records import Event, LateLabel, Limits, parse
from streamapp.registry import RegisteredSchema
from streamapp.settings import Settings


class Registry:
    """Keeps what is registered, by id, as a registry does."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def register(self, subject: str, schema: str) -> int:
        self.texts.append(schema)
        return len(self.texts)

    async def schema(self, schema_id: int) -> RegisteredSchema | None:
        return RegisteredSchema(self.texts[schema_id - 1], "AVRO") if schema_id <= len(self.texts) else None

    async def close(self) -> None:
        pass


def test_the_avro_demo_reads_back_as_the_json_demos_events() -> None:
    registry = Registry()
    framing = asyncio.run(AvroFraming.register(registry, "events-avro", "card", 42))  # type: ignore[arg-type]
    settings = Settings.from_env({**WORKER_MAPPING, "STREAMAPP_SCHEMA_REGISTRY_URL": "http://registry"})
    decoder = Decoder(Mapping.from_settings(settings), Limits(), Schemas(registry))  # type: ignore[arg-type]
    messages = list(producer.messages(datasets.load("card", seed=42, limit=300), label_delay=7))
    framed = [
        ConsumerRecord("events-avro", 0, n, 0, 0, key, framing.frame(key, value), None, 0, 0, [])
        for n, (key, value) in enumerate(messages)
    ]
    asyncio.run(decoder.prepare(framed))
    for (_, value), record in zip(messages, framed, strict=True):
        json_demo, avro_demo = parse(value), decoder.message(record)
        if isinstance(json_demo, LateLabel):
            assert avro_demo == LateLabel(json_demo.id, json_demo.y, None)
        else:
            assert isinstance(json_demo, Event) and isinstance(avro_demo, Event)
            assert (avro_demo.id, avro_demo.y) == (json_demo.id, json_demo.y)
            assert avro_demo.x == json_demo.x  # numbers as doubles: equal values
            assert avro_demo.ts is not None
