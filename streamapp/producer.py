"""`streamapp produce`: stream a dataset into the events topic at a rate, keyed by entity.

Kafka's default partitioner (murmur2 of the key, as in the Java client) decides the partition,
so every entity's events and late labels meet the same model in order.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from streamapp import datasets
from streamapp.demo_avro import AvroFraming
from streamapp.kafka_security import aiokafka_auth, bootstrap_servers, check_access
from streamapp.registry import SchemaRegistry
from streamapp.settings import Settings

MAX_IN_FLIGHT = 50_000  # sends without an acknowledgement before the producer waits
# aiokafka fails a batch that found no partition leader for request_timeout_ms (40 s by default),
# idempotent or not, and a single broker with a few hundred partitions took longer than that to
# stop and start again here (33 s to start alone). Faust's producers wait 20 minutes; this one 5.
REQUEST_TIMEOUT_MS = 300_000


def _value(sample: datasets.Sample, with_features: bool, with_label: bool, keyed: bool) -> bytes:
    doc: dict[str, Any] = {"id": sample.id}
    if with_features:
        doc["x"] = sample.x
    if with_label:
        doc["y"] = sample.y
    if not keyed:
        doc["entity"] = sample.key  # for STREAMAPP_KEY_FIELD=entity
    return orjson.dumps(doc)


def messages(
    samples: Iterable[datasets.Sample], label_delay: int = 0, keyed: bool = True
) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) of every message in order: events with inline labels, or, with label_delay N > 0,
    events without labels and each label `{"id", "y"}` sent just before the event N places later.

    That order is River's `stream.simulate_qa(..., delay=N)`, so
    `evaluate.progressive_val_score(..., delay=N)` is the oracle of a partition fed this way.
    """
    waiting: deque[tuple[int, datasets.Sample]] = deque()
    for i, sample in enumerate(samples):
        while waiting and waiting[0][0] <= i - label_delay:
            late = waiting.popleft()[1]
            yield late.key.encode() if keyed else None, _value(late, False, True, keyed)
        yield sample.key.encode() if keyed else None, _value(sample, True, label_delay == 0, keyed)
        if label_delay:
            waiting.append((i, sample))
    for _, late in waiting:
        yield late.key.encode() if keyed else None, _value(late, False, True, keyed)


async def produce(
    settings: Settings,
    dataset: str,
    *,
    rate: float = 0.0,
    limit: int | None = None,
    seed: int = 42,
    label_delay: int = 0,
    keyed: bool = True,
    progress: bool = True,
    avro_format: bool = False,
) -> int:
    """Send up to `limit` events (forever if None) at `rate` events/s (0: as fast as possible).

    Labels go inline, or as late label messages (see `messages`); `avro_format`: as the demo's
    Avro records (streamapp/demo_avro.py), schemas in STREAMAPP_SCHEMA_REGISTRY_URL. Returns the
    messages sent.
    """
    await check_access(settings)
    framing = None
    if avro_format:
        registry = SchemaRegistry.from_settings(settings)
        try:
            framing = await AvroFraming.register(registry, settings.events_topic, dataset, seed)
        finally:
            await registry.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.broker),
        linger_ms=5,
        max_batch_size=256 * 1024,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        **aiokafka_auth(settings),
    )
    await producer.start()
    sent = 0
    started = time.monotonic()
    total = None if limit is None else limit * (2 if label_delay else 1)
    bar = tqdm(total=total, unit="msg", desc=f"{dataset} -> {settings.events_topic}", disable=not progress)
    in_flight: list[asyncio.Future[Any]] = []
    try:
        samples = datasets.load(dataset, seed=seed, limit=limit)
        for key, value in messages(samples, label_delay, keyed):
            if framing is not None:
                value = framing.frame(key, value)
            in_flight.append(await producer.send(settings.events_topic, value, key=key))
            sent += 1
            bar.update(1)
            if sent % 1000 == 0:
                # Every 1000 sends (a check scans the list), check without waiting, so that a paced
                # stream stays smooth: only a long backlog of unacknowledged sends makes the
                # producer wait for the broker.
                _raise_failed(in_flight)
                if len(in_flight) >= MAX_IN_FLIGHT:
                    await _delivered(in_flight)
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
        await _delivered(in_flight)
    finally:
        bar.close()
        await producer.stop()
    return sent


def _raise_failed(in_flight: list[asyncio.Future[Any]]) -> None:
    """Drop the acknowledged sends; raise the error of a failed one."""
    for future in in_flight:
        if future.done():
            future.result()
    in_flight[:] = [future for future in in_flight if not future.done()]


async def _delivered(in_flight: list[asyncio.Future[Any]]) -> None:
    """Wait for the broker's acks, so a failed delivery stops the producer instead of vanishing."""
    await asyncio.gather(*in_flight)
    in_flight.clear()
