"""Unkeyed events are repartitioned by STREAMAPP_KEY_FIELD so each entity meets one model in order."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from streamapp import models
from streamapp.producer import produce
from streamapp.settings import Settings
from tests.integration.cluster import BOOTSTRAP, read_topic, running, unique_env, wait_for
from tests.oracle import river_scores


def repartition_topic(app_id: str) -> str:
    async def names() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        await admin.start()
        try:
            return await admin.list_topics()
        finally:
            await admin.close()

    (name,) = [t for t in asyncio.run(names()) if t.startswith(app_id) and t.endswith("-repartition")]
    return name


def test_unkeyed_events_are_grouped_by_entity(tmp_path: Path) -> None:
    partitions = 4
    env = unique_env(partitions, key_field="entity")
    settings = Settings.from_env(env)
    asyncio.run(produce(settings, "card", rate=0, limit=2000, keyed=False, progress=False))
    assert all(r.key is None for rs in read_topic(settings.events_topic, partitions).values() for r in rs)

    with running(env, tmp_path / "w1") as worker:

        def applied() -> int:
            return sum(p["events_seen"] for p in worker.models().values())

        wait_for("2000 events applied", lambda: applied() == 2000, 120, worker.log_tail)
        topic = repartition_topic(settings.app_id)
        served = worker.models()

    partition_of_entity: dict[str, set[int]] = defaultdict(set)
    for partition, records in read_topic(settings.predictions_topic, partitions).items():
        for record in records:
            partition_of_entity[orjson.loads(record.value)["key"]].add(partition)
    assert len(partition_of_entity) > 100
    for entity, seen_in in partition_of_entity.items():
        assert seen_in == {(murmur2(entity.encode()) & 0x7FFFFFFF) % partitions}, entity

    build = models.resolve(settings.model).build
    for partition, records in read_topic(topic, partitions).items():
        stream = [(d["x"], d["y"]) for d in (orjson.loads(r.value) for r in records)]
        assert served[partition]["events_learned"] == len(stream)
        expected = river_scores(stream, build, ["rocauc", "accuracy"])
        got = {k: served[partition]["metrics"][k] for k in expected}
        assert got == pytest.approx(expected, abs=1e-9)
