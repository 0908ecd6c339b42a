"""Labels on their own topic (STREAMAPP_LABELS_TOPIC), arriving with varying delays, merged with
the events into each partition's log (the sequence topic), across a SIGKILL: every partition's
metrics and predictions equal River's progressive validation on that log."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp import datasets
from streamapp.settings import Settings
from tests.integration.chaos import Cluster, assert_exact
from tests.integration.cluster import BOOTSTRAP, Worker, end_offsets, read_topic, unique_env, wait_for

PARTITIONS, EVENTS, RATE = 4, 5000, 350


async def create_topic(name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


def schedule(events: int, seed: int = 3) -> list[tuple[str, bytes, bytes]]:
    """(topic role, key, value) in sending order: each event, and its label 0 to 300 events later
    (a tenth never labelled), on its own topic."""
    rng = random.Random(seed)
    due: dict[int, list[tuple[str, bytes, bytes]]] = defaultdict(list)
    out = []
    for n, sample in enumerate(datasets.load("card", seed=seed, limit=events)):
        key = sample.key.encode()
        out.append(("events", key, orjson.dumps({"id": sample.id, "x": sample.x})))
        if rng.random() < 0.9:
            due[n + rng.choice((0, 0, 1, 5, 40, 300))].append(
                ("labels", key, orjson.dumps({"id": sample.id, "y": sample.y}))
            )
        out.extend(due.pop(n, []))
    return out + [label for n in sorted(due) for label in due[n]]


async def produce(settings: Settings, messages: list[tuple[str, bytes, bytes]], rate: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    topics = {"events": settings.events_topic, "labels": settings.labels_topic}
    started, sent = time.monotonic(), 0
    try:
        for role, key, value in messages:
            await producer.send(topics[role], value, key=key)
            sent += role == "events"
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()


def test_labels_on_their_own_topic_with_varying_delays_across_a_sigkill(tmp_path: Path) -> None:
    labels = f"labels-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topic(labels, PARTITIONS))
    env = unique_env(PARTITIONS, labels_topic=labels, snapshot_every_events="400")
    settings = Settings.from_env(env)
    messages = schedule(EVENTS)
    cluster = Cluster(env, tmp_path)
    try:
        cluster.start_all("w1", "w2")

        async def stream_with_a_crash() -> None:
            producing = asyncio.ensure_future(produce(settings, messages, RATE))
            await asyncio.sleep(6)
            await asyncio.to_thread(cluster.stop, "w2", signal.SIGKILL)
            await asyncio.sleep(4)
            await asyncio.to_thread(cluster.start, "w2")
            await producing

        asyncio.run(stream_with_a_crash())
        # Every record of both topics copied into the log and applied, before the log is read.
        last = {
            role: end_offsets(topic, PARTITIONS)
            for role, topic in (("events", settings.events_topic), ("labels", settings.labels_topic))
        }

        def copied_and_applied() -> bool:
            served = cluster.served()
            return len(served) == PARTITIONS and all(
                served[p][0]["sources"].get(role, -1) == end - 1
                for role, ends in last.items()
                for p, end in ends.items()
            )

        wait_for("every record of both topics applied", copied_and_applied, 180, cluster.logs)
        sequence_topic = f"{settings.app_id}-sequence"
        seen: set[tuple[str, int]] = set()

        def first_copies(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any] | None:
            headers = dict(record.headers)
            source = (headers["streamapp.origin"].decode(), int(headers["streamapp.origin.offset"]))
            key = (*source, record.partition)
            if key in seen:
                return None  # a copy of a record applied already
            seen.add(key)  # type: ignore[arg-type]
            return orjson.loads(record.value)

        assert_exact(cluster, settings, log_topic=sequence_topic, decode=first_copies)

        # The log is a merge: every record of both topics, once, each topic's in its own order.
        log = read_topic(sequence_topic, PARTITIONS)
        for role, topic in (("events", settings.events_topic), ("labels", settings.labels_topic)):
            for partition, records in read_topic(topic, PARTITIONS).items():
                copied: list[int] = []
                for r in log[partition]:
                    headers = dict(r.headers)
                    if headers["streamapp.origin"] == role.encode():
                        offset = int(headers["streamapp.origin.offset"])
                        if offset not in copied:
                            copied.append(offset)
                assert copied == [r.offset for r in records], f"{role} partition {partition}"
        served = [s for s, _ in cluster.served().values()]
        # Every label is in the log once: taught (its event had been seen), or unknown (its copy
        # reached the log before its event's: the two topics have no order between them).
        labels_sent = sum(1 for role, *_ in messages if role == "labels")
        assert sum(s["labels_late"] + s["labels_unknown"] for s in served) == labels_sent
    finally:
        cluster.stop_all()


@pytest.mark.parametrize(
    ("partitions", "reason"), [(None, "no such topic"), (2, "has 2 partitions, the events 4")]
)
def test_a_labels_topic_that_does_not_fit_stops_the_worker_at_start(
    tmp_path: Path, partitions: int | None, reason: str
) -> None:
    labels = f"labels-{uuid.uuid4().hex[:8]}"
    if partitions is not None:
        asyncio.run(create_topic(labels, partitions))
    worker = Worker(unique_env(4, labels_topic=labels), tmp_path / "w1")
    assert worker.run_until_exit(60) != 0
    assert reason in worker.log_tail()
