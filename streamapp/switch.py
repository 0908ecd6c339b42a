"""`streamapp switch`: the last step of a blue/green upgrade (docs/runbooks/upgrade.md).

The new version ("green") ran as its own group from the retained log, beside the running one
("blue"), writing its predictions and dead letters to topics of its own. To move the outputs to
it without a gap or a repeat: blue is stopped, green applies every event and is stopped, then this
command copies, partition by partition, green's outputs of every event past the last one blue
answered onto blue's topics (in event order, each event once), and green restarts writing to
blue's topics. Its consumer group resumes where it stopped, so its first new output is for the
first new event.

Run it with blue's settings (STREAMAPP_PREDICTIONS_TOPIC and STREAMAPP_DEADLETTER_TOPIC are where
the copies go) and name green's topics and group. It refuses while green has events left to
apply or still runs, and it can be run again: it starts after whatever is on blue's topics.
A prediction's offset is the events topic's only without STREAMAPP_LABELS_TOPIC and
STREAMAPP_KEY_FIELD (else it counts in a topic of each deployment's own): it refuses those.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError

from streamapp import kafka_security
from streamapp.output_format import PredictionReader
from streamapp.replay import each_record
from streamapp.settings import Settings

#: marks a copy, naming the topic it was copied from: an audit can tell them apart
COPIED_FROM = "streamapp.copied.from"
#: a topic's last records read for the last event answered: a partition's outputs are written in
#: event order, and a replay after a crash writes over and past the ones before it
TAIL = 100


class SwitchRefused(Exception):
    """The switch cannot be made now: the message says what to do first."""


@dataclass(frozen=True)
class Green:
    """The new deployment's group and output topics."""

    app_id: str
    predictions: str
    deadletters: str


@dataclass(frozen=True)
class Output:
    """One of green's output records, and where its copy goes."""

    topic: str  # blue's predictions or dead-letter topic
    record: ConsumerRecord


class EventOffsets:
    """The events topic offset an output record answers: a prediction's `offset` field, a dead
    letter's `streamapp.source.offset` header (when its source is the events topic)."""

    def __init__(self, settings: Settings, events_ends: dict[int, int]) -> None:
        self.events_topic = settings.events_topic
        self.events_ends = events_ends
        self.reader = PredictionReader.from_settings(settings)

    async def of_prediction(self, record: ConsumerRecord) -> object:
        doc = await self.reader.doc(record.value)
        return doc.get("offset") if isinstance(doc, dict) else None

    def of_deadletter(self, record: ConsumerRecord) -> object:
        headers = dict(record.headers or ())
        if headers.get("streamapp.source.topic") != self.events_topic.encode():
            return None
        try:
            return int(headers.get("streamapp.source.offset", b""))
        except ValueError:
            return None

    async def of(self, record: ConsumerRecord, prediction: bool) -> int | None:
        """The offset, or None for a record that names none, or one the events topic of its
        partition does not hold (anyone who may write the topic could have written it)."""
        offset = await self.of_prediction(record) if prediction else self.of_deadletter(record)
        if type(offset) is not int or not 0 <= offset < self.events_ends.get(record.partition, 0):
            return None
        return offset


async def last_answered(
    settings: Settings, offsets: EventOffsets, blue_ends: dict[str, dict[int, int]], partition: int
) -> int:
    """The last event offset blue's outputs of the partition answer (-1: none)."""
    last = -1
    for topic, prediction in ((settings.predictions_topic, True), (settings.deadletter_topic, False)):
        end = blue_ends[topic][partition]
        async with aclosing(each_record(settings, topic, partition, max(0, end - TAIL), end)) as tail:
            async for record in tail:
                answered = await offsets.of(record, prediction)
                if answered is not None:
                    last = max(last, answered)
    return last


async def topic_ends(settings: Settings, topic: str) -> dict[int, int]:
    """{partition: end offset} of one of the deployment's topics (read_committed)."""
    async with kafka_security.consumer(settings, isolation_level="read_committed") as consumer:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return {tp.partition: int(end) for tp, end in (await consumer.end_offsets(tps)).items()}


async def green_outputs(
    settings: Settings, green: Green, offsets: EventOffsets, partition: int, after: int
) -> list[Output]:
    """Green's outputs of the partition for events past `after`, in event order, each event's
    first copy only (a replay repeats some)."""
    found: dict[int, Output] = {}
    sources = (
        (green.predictions, settings.predictions_topic, True),
        (green.deadletters, settings.deadletter_topic, False),
    )
    for source, target, prediction in sources:
        async with aclosing(each_record(settings, source, partition)) as written:
            async for record in written:
                answered = await offsets.of(record, prediction)
                if answered is not None and answered > after and answered not in found:
                    found[answered] = Output(target, record)
    return [found[offset] for offset in sorted(found)]


async def green_done(settings: Settings, green: Green) -> None:
    """Green's group has applied every event and has no member left, or SwitchRefused: a green
    still running would write outputs past the ones copied, onto its own topics."""
    async with kafka_security.consumer(settings, group_id=green.app_id) as consumer:
        tps = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(tps)
        committed = {tp: await consumer.committed(tp) or 0 for tp in tps}
        left = {tp.partition: ends[tp] - committed[tp] for tp in tps if committed[tp] < ends[tp]}
        if left:
            raise SwitchRefused(
                f"green ({green.app_id}) has events left to apply {left} (partition: events): stop "
                "blue, wait until green has applied every event, stop green, then switch"
            )
        # The broker takes a commit from outside the group only while the group has no member
        # (aiokafka's DescribeGroups does not decode Kafka 4's answer); the same offsets again.
        consumer.assign(tps)
        try:
            await consumer.commit({tp: offset for tp, offset in committed.items()})
        except CommitFailedError:
            raise SwitchRefused(f"green ({green.app_id}) still runs: stop its workers, then switch") from None


async def ends_of(settings: Settings, green: Green) -> list[dict[int, int]]:
    """The end offsets of green's output topics: they must not move while the switch copies."""
    return [await topic_ends(settings, topic) for topic in (green.predictions, green.deadletters)]


async def switch(settings: Settings, green: Green) -> dict[int, int]:
    """Copy green's outputs past blue's onto blue's topics; {partition: records copied}."""
    if settings.labels_topic or settings.key_field:
        raise SwitchRefused(
            "with STREAMAPP_LABELS_TOPIC or STREAMAPP_KEY_FIELD a prediction's offset counts in a "
            "topic of each deployment's own: move the readers of the outputs to green's topics instead"
        )
    if green.app_id == settings.app_id or {green.predictions, green.deadletters} & {
        settings.predictions_topic,
        settings.deadletter_topic,
    }:
        raise SwitchRefused("green's group and topics must differ from this deployment's (blue's)")
    await green_done(settings, green)
    before = await ends_of(settings, green)
    offsets = EventOffsets(settings, await topic_ends(settings, settings.events_topic))
    blue = (settings.predictions_topic, settings.deadletter_topic)
    blue_ends = {topic: await topic_ends(settings, topic) for topic in blue}
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_security.bootstrap_servers(settings.broker),
        acks="all",
        enable_idempotence=True,
        max_request_size=settings.kafka_max_message_bytes,
        **kafka_security.aiokafka_auth(settings),
    )
    await producer.start()
    copied: dict[int, int] = {}
    try:
        for partition in range(settings.partitions):
            after = await last_answered(settings, offsets, blue_ends, partition)
            outputs = await green_outputs(settings, green, offsets, partition, after)
            sent = []
            for output in outputs:
                record = output.record
                headers = [*(record.headers or ()), (COPIED_FROM, record.topic.encode())]
                sent.append(
                    await producer.send(
                        output.topic,
                        record.value,
                        record.key,
                        partition,
                        timestamp_ms=record.timestamp,
                        headers=headers,
                    )
                )
            await asyncio.gather(*sent)  # each copy acknowledged, or the first failure raised
            copied[partition] = len(outputs)
    finally:
        await producer.stop()
        await offsets.reader.close()
    if await ends_of(settings, green) != before:
        raise SwitchRefused("green wrote more outputs while they were copied: stop green, then switch again")
    return copied


def run(settings: Settings, green: Green) -> int:
    try:
        copied = asyncio.run(switch(settings, green))
    except SwitchRefused as exc:
        print(f"streamapp switch: {exc}")
        return 1
    for partition, count in copied.items():
        print(f"partition {partition}: {count} outputs copied from {green.predictions}/{green.deadletters}")
    print(
        f"done: restart green with STREAMAPP_PREDICTIONS_TOPIC={settings.predictions_topic} "
        f"STREAMAPP_DEADLETTER_TOPIC={settings.deadletter_topic}"
    )
    return 0
