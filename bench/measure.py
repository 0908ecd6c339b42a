"""Measuring any implementation the same way: from what it wrote to its output topic.

Every implementation reads the same events and writes one record per event, which the broker
stamps with its arrival time (stamp_on_arrival). Throughput is the number of output records
over the time from the first input record to the last output record: implementations are
running before the first event is produced, so this is the whole job, and it does not flatter
one that writes its outputs in batches (the first output of a batch only arrives when the batch
is done). The end-to-end latency of an event is its output record's time minus its input
record's time: no implementation reports on itself.

With STREAMAPP_PROCESSING_GUARANTEE=exactly_once, a prediction is appended when it is produced
but a read_committed consumer sees it only once its transaction commits (up to
STREAMAPP_TRANSACTION_INTERVAL later). Its time is then when it became visible: the first time
the topic's last stable offset (what a read_committed consumer reads up to) was seen past it,
polled every VISIBILITY_POLL seconds (Visibility), for throughput as for latency.
"""

from __future__ import annotations

import asyncio
import bisect
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from tqdm import tqdm

from tests.integration.cluster import BOOTSTRAP, committed_offsets, read_topic

#: seconds between two reads of the last stable offsets (Visibility): the resolution of the
#: exactly-once times, well under the 0.1 s transaction interval, for ~3% of one core
VISIBILITY_POLL = 0.02


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


class Visibility:
    """When each offset of a topic became visible to read_committed consumers: a thread reads
    the topic's last stable offsets every `every` seconds while the block runs.

        with Visibility(topic, partitions) as visible:
            ...  # the transactional producer writes the topic
        visible.at(partition, offset)
    """

    def __init__(self, topic: str, partitions: int, every: float = VISIBILITY_POLL) -> None:
        self.topic = topic
        self.partitions = partitions
        self.every = every
        #: per partition, (wall-clock time, last stable offset) each time it moved
        self.steps: dict[int, list[tuple[float, int]]] = {p: [] for p in range(partitions)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._poll()), daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._ends: dict[int, list[int]] = {}  # at()'s index of `steps`

    def __enter__(self) -> Visibility:
        self._thread.start()
        self._started.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _poll(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, isolation_level="read_committed")
        try:
            await consumer.start()
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            last = dict.fromkeys(range(self.partitions), -1)
            while not self._stop.is_set():
                ends = await consumer.end_offsets(tps)
                now = time.time()  # when the answer arrived: a consumer asking then would see it
                for tp, end in ends.items():
                    if end != last[tp.partition]:
                        self.steps[tp.partition].append((now, end))
                        last[tp.partition] = end
                self._started.set()
                await asyncio.sleep(self.every)
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._started.set()
            await consumer.stop()

    def stable_ends(self) -> dict[int, int]:
        """The last stable offsets last seen."""
        return {p: steps[-1][1] if steps else 0 for p, steps in self.steps.items()}

    def at(self, partition: int, offset: int) -> float:
        """The first time `offset` was below the partition's last stable offset (nan: never seen)."""
        steps = self.steps[partition]
        ends = self._ends.get(partition)
        if ends is None or len(ends) != len(steps):
            ends = self._ends[partition] = [end for _, end in steps]
        index = bisect.bisect_right(ends, offset)
        return steps[index][0] if index < len(steps) else float("nan")

    def wait_stable(self, partitions: int, timeout: float = 30) -> None:
        """Until the last stable offsets reach the topic's ends: no transaction is open any more
        (a transaction's commit marker comes after its records)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._error is not None:
                raise RuntimeError(f"{self.topic}: last stable offsets not read") from self._error
            ends = asyncio.run(_ends(self.topic, partitions))
            if self.stable_ends() == ends:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic}: still open transactions after {timeout} s")
            time.sleep(0.1)


async def _ends(topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: end for tp, end in ends.items()}
    finally:
        await consumer.stop()


def timings(
    output_topic: str,
    input_topic: str,
    partitions: int,
    visibility: Visibility | None = None,
    since: float = 0.0,
) -> Timings:
    """Throughput and end-to-end latencies of everything in `output_topic` (of the inputs
    produced at `since` or later).

    Output records are JSON naming the input's "partition" and "offset". With `visibility` (a
    transactional output topic), the committed records only, timed when they became visible.
    """
    sent = {
        (r.partition, r.offset): r.timestamp / 1000
        for records in read_topic(input_topic, partitions).values()
        for r in records
        if r.timestamp / 1000 >= since
    }
    isolation = "read_uncommitted" if visibility is None else "read_committed"
    outputs = [r for records in read_topic(output_topic, partitions, isolation).values() for r in records]
    latencies, stamps = [], []
    for record in outputs:
        doc = orjson.loads(record.value)
        produced = sent.get((doc["partition"], doc["offset"]))
        if produced is None:
            continue  # an output of an earlier input
        stamp = (
            record.timestamp / 1000 if visibility is None else visibility.at(record.partition, record.offset)
        )
        stamps.append(stamp)
        latencies.append(stamp - produced)
    return Timings(len(latencies), min(sent.values(), default=0.0), max(stamps, default=0.0), latencies)


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


def wait_for_committed(
    group: str, topic: str, partitions: int, count: int, timeout: float, visibility: Visibility
) -> None:
    """wait_for_count for an exactly-once worker: the end offsets of its output topic count the
    transactions' commit markers too, so wait until its consumer group has committed `count`
    offsets of the source `topic` (each commit is in the transaction of the outputs it covers),
    then until no transaction is open."""
    deadline = time.monotonic() + timeout
    with tqdm(total=count, unit="ev", desc=f"  {topic} (committed)", leave=False) as bar:
        while True:
            now = sum(committed_offsets(group, topic).values())
            bar.update(now - bar.n)
            if now >= count:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{group}: {now} of {count} offsets of {topic} committed in {timeout} s")
            time.sleep(0.5)
    visibility.wait_stable(partitions, max(10.0, deadline - time.monotonic()))


def cpu_model() -> str:
    """The CPU's name as /proc/cpuinfo gives it, for the figures' captions."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB; 0 when it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
