"""Measuring any implementation the same way: from what it wrote to its output topic.

Every implementation reads the same events and writes one record per event, which the broker
stamps with its arrival time (stamp_on_arrival). Throughput is the number of output records
over the time from the first input record to the last output record: implementations are
running before the first event is produced, so this is the whole job, and it does not flatter
one that writes its outputs in batches (the first output of a batch only arrives when the batch
is done). The end-to-end latency of an event is its output record's time minus its input
record's time: no implementation reports on itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from tqdm import tqdm

from tests.integration.cluster import BOOTSTRAP, read_topic


@dataclass(frozen=True)
class Timings:
    count: int
    first: float  # the first input record's time
    last: float  # the last output record's time
    latencies: list[float]  # seconds, output time - input time, when inputs were matched

    @property
    def throughput(self) -> float:
        return self.count / (self.last - self.first) if self.last > self.first else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _count(topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _stamp_on_arrival(topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        configs = {"message.timestamp.type": "LogAppendTime"}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()


def stamp_on_arrival(topic: str) -> None:
    """Have the broker stamp the output topic's records: some frameworks (Quix Streams) copy the
    input's timestamp to their outputs, which would hide their processing time."""
    asyncio.run(_stamp_on_arrival(topic))


def timings(output_topic: str, input_topic: str, partitions: int) -> Timings:
    """Throughput and end-to-end latencies of everything in `output_topic`.

    Output records are JSON naming the input's "partition" and "offset".
    """
    sent = {
        (r.partition, r.offset): r.timestamp / 1000
        for records in read_topic(input_topic, partitions).values()
        for r in records
    }
    outputs = [r for records in read_topic(output_topic, partitions).values() for r in records]
    stamps = [r.timestamp / 1000 for r in outputs]
    latencies = []
    for record, stamp in zip(outputs, stamps, strict=True):
        doc = orjson.loads(record.value)
        latencies.append(stamp - sent[(doc["partition"], doc["offset"])])
    return Timings(len(outputs), min(sent.values(), default=0.0), max(stamps, default=0.0), latencies)


def wait_for_count(
    topic: str, partitions: int, count: int, timeout: float, alive: Callable[[], bool] = lambda: True
) -> None:
    """Block until `topic` holds at least `count` records, showing progress; raise if the
    implementation writing it is no longer `alive`."""
    deadline = time.monotonic() + timeout
    with tqdm(total=count, unit="ev", desc=f"  {topic}", leave=False) as bar:
        while True:
            now = asyncio.run(_count(topic, partitions))
            bar.update(now - bar.n)
            if now >= count:
                return
            if not alive():
                raise RuntimeError(f"{topic}: the implementation stopped after {now} of {count} records")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {now} of {count} records after {timeout} s")
            time.sleep(0.5)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB; 0 when it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
