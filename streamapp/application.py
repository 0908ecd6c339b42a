"""The composition root: the Faust app, its topics, the snapshot table and the processor, from
Settings.

`create_app` has no side effects at import, so tests can build apps with their own settings;
`streamapp.app` builds the one that `faust -A streamapp.app worker` and `streamapp worker` run.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import faust
import orjson
from faust.types import TP, StreamT, TableT, TopicT

from streamapp import allocator, input_check, kafka_security, recovery, rocksdb_memory, seam, sequence, web
from streamapp.consumer import BatchApp, BatchConsumer
from streamapp.gaps import GapError
from streamapp.outbox import Outbox
from streamapp.processor import Outputs, Processor
from streamapp.prometheus import serve_metrics
from streamapp.settings import Settings
from streamapp.transactions import Transactions, producer_factory

log = logging.getLogger(__name__)

MIB = 1024 * 1024


# RocksDB per partition db: Faust's defaults (3 x 64 MiB memtables) suit one big table, but a
# worker opens one db per partition it serves or stands by for; their memtables and block cache
# share the worker's STREAMAPP_ROCKSDB_MEMORY_BYTES (streamapp/rocksdb_memory.py).
SNAPSHOT_TABLE_ROCKSDB = {
    "write_buffer_size": 8 * MIB,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * MIB,
}


def faust_options(settings: Settings) -> dict[str, Any]:
    """Faust's app options for these settings, each with why it differs from Faust's default."""
    return {
        "broker": settings.broker,
        # TLS and SASL for every Faust client: consumer, both producers, topic creation.
        "broker_credentials": kafka_security.faust_credentials(settings),
        "store": "rocksdb://",
        "datadir": settings.datadir,
        "autodiscover": False,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "table_standby_replicas": settings.standby_replicas,
        "web_bind": settings.web_bind,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        # The built-in /table views would serve raw model bytes to anyone.
        "web_tables_enabled": False,
        # Snapshots are single records of up to STREAMAPP_MAX_SNAPSHOT_BYTES.
        "producer_max_request_size": settings.kafka_max_message_bytes,
        "consumer_max_fetch_size": settings.kafka_max_message_bytes,
        # Bound a fetched batch: its last event waits for all before it (500: ~40 ms of a fast
        # model; with large fetches a poll could hold minutes of slow-model work).
        "broker_max_poll_records": 500,
        # No linger: predictions leave already batched (streamapp/outbox.py); a linger only
        # delayed them (p50 end-to-end 26 ms with 5 ms, 7 ms without, HT at 7,000 events/s).
        "producer_linger": 0.0,
        # Predictions leave in record batches (streamapp/outbox.py): ~700 of them per 256 KiB.
        "producer_max_batch_size": 256 * 1024,
        "consumer_auto_offset_reset": "earliest",
        # Every producer waits for all in-sync replicas and is idempotent (seam.IdempotentProducer).
        "producer_acks": -1,
        "broker_session_timeout": settings.session_timeout,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout / 4),
    }


def key_by_field(field: str) -> Callable[[bytes], bytes]:
    """The repartitioning key for producers that do not key: the event's top-level `field`, else
    the feature x[field] (`streamapp produce --no-key` writes the entity as "entity").

    Malformed values keep an empty key here and are refused by the processor after
    repartitioning, so that the reason is decided in one place.
    """

    def key_of(value: bytes) -> bytes:
        try:
            doc = orjson.loads(value)
            key = doc[field] if field in doc else doc["x"][field]
            return str(key).encode()
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            return b""

    return key_of


@dataclass(frozen=True)
class Topics:
    """The app's topics and its snapshot table; with STREAMAPP_LABELS_TOPIC, the labels topic
    and the sequence topic that merges it with the events (streamapp/sequence.py)."""

    events: TopicT
    predictions: TopicT
    deadletters: TopicT
    snapshots: TableT
    merged: tuple[TopicT, TopicT] | None = None  # (events and labels, sequence)


def source_filter(settings: Settings) -> Callable[[str], bool]:
    """Is this the topic the processor reads events of? The repartitioned one with
    STREAMAPP_KEY_FIELD, the sequence topic with STREAMAPP_LABELS_TOPIC, else the events topic."""
    if settings.key_field:
        return lambda topic: topic.endswith("-repartition")
    if settings.labels_topic:
        merged = sequence.sequence_topic(settings.app_id)
        return lambda topic: topic == merged
    return lambda topic: topic == settings.events_topic


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    def raw_topic(*names: str, internal: bool = False, output: bool = False) -> TopicT:
        """Bytes in, bytes out: the processor decodes events itself, so bad ones reach the dead letters.
        `output`: written by the workers with what they read (a dead letter holds the event, a
        copy in the sequence topic the record): created with room for any record the events
        topic can hold (the broker's default is 1 MB, and a record the broker refuses there
        would stop the worker or lose its dead letter)."""
        return app.topic(
            *names,
            partitions=settings.partitions,
            internal=internal,
            config={"max.message.bytes": str(settings.kafka_max_message_bytes)} if output else None,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    snapshots = app.Table(
        "snapshots",
        key_type=str,
        value_type=bytes,
        partitions=settings.partitions,
        # Changelog records buffered per table during recovery: x 64 MiB at worst.
        recovery_buffer_size=4,
        standby_buffer_size=4,
        # The table's name as the URL's path: a URL with a scheme alone is false to yarl, and
        # Faust would take the app's store instead; this one keeps Faust's file names.
        store=f"{rocksdb_memory.SCHEME}:snapshots",
        options={**SNAPSHOT_TABLE_ROCKSDB, "memory_budget": settings.rocksdb_memory_bytes},
        extra_topic_configs={
            "max.message.bytes": str(settings.kafka_max_message_bytes),
            "segment.bytes": str(64 * MIB),
            "min.cleanable.dirty.ratio": "0.1",
            "max.compaction.lag.ms": str(30 * 60 * 1000),
        },
    )
    # internal=True: the worker creates the events topic with the configured partitions if missing.
    events = raw_topic(settings.events_topic, internal=True)
    merged = None
    if settings.labels_topic:
        # The labels topic is the bank's: it must exist, co-partitioned (checked at start).
        sources = raw_topic(settings.events_topic, settings.labels_topic)
        merged = (sources, raw_topic(sequence.sequence_topic(settings.app_id), internal=True, output=True))
    predictions = raw_topic(settings.predictions_topic, output=True)
    return Topics(events, predictions, raw_topic(settings.deadletter_topic, output=True), snapshots, merged)


class TableSnapshots:
    """The snapshot store's table: Faust's RocksDB table, written outside Faust's streams as if
    an event of the partition were being processed (so the write lands in its changelog
    partition: seam.current_event)."""

    def __init__(self, app: faust.App, table: TableT, sources: recovery.SourcePartitions) -> None:
        self.app, self.table, self.sources = app, table, sources

    def get(self, key: str) -> bytes | None:
        return cast(bytes | None, self.table.get(key))

    def put(self, partition: int, key: str, blob: bytes) -> None:
        topic = self.sources.source_topic(partition)
        if topic is None:
            raise RuntimeError(f"partition {partition} of the source topic is not assigned here (any more)")
        with seam.current_event(self.app, TP(topic, partition)):
            self.table[key] = blob


def transactions(app: BatchApp, settings: Settings) -> Transactions | None:
    """With exactly_once, the partitions' transactional producers, committed before every
    consumer commit (so a rebalance hands over what is done), every transaction interval, and
    when the worker stops."""
    if settings.processing_guarantee != "exactly_once":
        return None
    new_producer = producer_factory(
        kafka_security.bootstrap_servers(settings.broker),
        settings.kafka_max_message_bytes,
        kafka_security.aiokafka_auth(settings),
    )
    txns = Transactions(settings.app_id, app.conf.id, settings.transaction_interval, new_producer)
    app.on_commit = partial(txns.commit_due, force=True)
    app.on_stopping = (*app.on_stopping, txns.close)
    app.task(txns.commit_loop)
    return txns


def kafka_outputs(app: BatchApp, txns: Transactions | None = None) -> Outputs:
    """The processor's outputs on the app's producers."""

    def delivered(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("streamapp: an output record was not delivered: %r", future.exception())

    async def emit(topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Any) -> None:
        """Straight to Faust's producer: Topic.send's per-record bookkeeping is not needed."""
        future = await app.producer.send(topic, key, value, partition, None, headers)
        cast(asyncio.Future, future).add_done_callback(delivered)

    def outbox(topic: str, partition: int) -> Outbox:
        return Outbox(seam.aiokafka_producer(app.output_producer), topic, partition, delivered)

    async def flush() -> None:
        await app.producer.flush()

    return Outputs(emit, outbox, partial(recovery.seek_back, app), flush, txns)


def subscribe(app: BatchApp, settings: Settings, topics: Topics, processor: Processor) -> None:
    """The agent subscribes the source topic (so Faust assigns it, co-partitioned with the table)
    and, with STREAMAPP_KEY_FIELD, repartitions; its name prefixes the repartition topic, so it
    includes the app id. Its stream never yields: the consumer routes the source topic's fetched
    batches to the processor around it (streamapp/consumer.py). With STREAMAPP_LABELS_TOPIC a
    second agent subscribes the events and labels topics, whose batches the forwarder appends to
    the sequence topic, the processor's source."""
    events = topics.events if topics.merged is None else topics.merged[1]

    @app.agent(events, name=f"{settings.app_id}-learn", concurrency=1)
    async def learn(stream: StreamT) -> None:
        source = stream
        if settings.key_field:
            source = stream.group_by(key_by_field(settings.key_field), name=settings.key_field)
        async for event in source.events():
            raise RuntimeError(f"event {event.message.tp}@{event.message.offset} bypassed the batch route")

    async def process_batch(tp: TP, batch: Sequence[Any], still_ours: Callable[[], bool]) -> int | None:
        try:
            return await processor.handle_batch(tp, batch, still_ours)
        except GapError as exc:
            log.critical("streamapp: %s; stopping the worker", exc)
            await app.crash(exc)
            return None

    app.batch_routes = [(source_filter(settings), process_batch)]
    if topics.merged is not None:
        forward_to_sequence(app, settings, topics.merged[0], processor)


def forward_to_sequence(app: BatchApp, settings: Settings, sources: TopicT, processor: Processor) -> None:
    """The events and labels topics' batches appended to the sequence topic (streamapp/sequence.py)."""

    async def send(
        topic: str, key: bytes | None, value: bytes | None, partition: int, ts: float | None, headers: Any
    ) -> Any:
        return await app.producer.send(topic, key, value, partition, ts, headers)

    def offsets() -> sequence.SourceOffsets:
        return cast(BatchConsumer, app.consumer)

    forwarder = sequence.Forwarder(
        send,
        sequence.sequence_topic(settings.app_id),
        settings.labels_topic,
        sequence.Sources(offsets, partial(recovery.seek_back, app), processor.states.get),
        settings.max_event_bytes,
    )

    async def forget_given_away(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        forwarder.keep_only(assigned)

    # mode's stubs reject any async receiver here; the signal does await coroutine receivers.
    app.on_partitions_assigned.connect(forget_given_away)  # type: ignore[arg-type]

    @app.agent(sources, name=f"{settings.app_id}-merge", concurrency=1)
    async def merge(stream: StreamT) -> None:
        async for event in stream.events():
            raise RuntimeError(f"record {event.message.tp}@{event.message.offset} bypassed the batch route")

    async def forward_batch(tp: TP, batch: Sequence[Any], still_ours: Callable[[], bool]) -> int | None:
        try:
            return await forwarder.forward(tp, batch, still_ours)
        except Exception as exc:  # the producer gave up on a copy: stop before committing past it
            log.critical(
                "streamapp: copying %s to the sequence topic failed: %r; stopping the worker", tp, exc
            )
            await app.crash(exc)
            return None

    merged = {settings.events_topic, settings.labels_topic}
    app.batch_routes = [*app.batch_routes, (merged.__contains__, forward_batch)]


async def freeze_startup_objects() -> None:
    """Put what exists once the worker runs (Faust, River, aiokafka) out of the collector's
    reach: full collections scanned it all and stalled the event loop 50-90 ms (measured)."""
    gc.freeze()


async def return_large_buffers() -> None:
    """Snapshots' buffers go back to the system when freed (streamapp/allocator.py says why)."""
    log.info(allocator.return_large_buffers())


class UnknownTopics:
    """Asks the broker again for subscribed topics the consumer's metadata lacks, which aiokafka
    would otherwise do only every 5 minutes (seam.ConsumerSeam.refresh_unknown_topics says why)."""

    EVERY = 2.0  # seconds; a request to the broker only when a topic is missing

    def __init__(self, app: BatchApp) -> None:
        self.app, self.missing = app, set[str]()

    async def check(self) -> None:
        try:
            missing = await cast(BatchConsumer, self.app.consumer).refresh_unknown_topics()
        except Exception as exc:  # not subscribed yet, stopping, the broker away: next time
            log.debug("streamapp: topic metadata not checked: %r", exc)
            return
        if missing and missing != self.missing:
            log.warning(
                "streamapp: the consumer's metadata lacks subscribed topics %s; asked the broker again",
                ", ".join(sorted(missing)),
            )
        self.missing = missing


async def preflight(settings: Settings, processor: Processor) -> None:
    """The worker's checks before it joins: Kafka's credentials, then its inputs and outputs."""
    await kafka_security.preflight(settings)
    await input_check.preflight(settings, processor.avro_predictions)


def create_app(settings: Settings) -> faust.App:
    """Build the app; resolving the models here makes a bad STREAMAPP_MODEL fail at start."""
    app = BatchApp(settings.app_id, **faust_options(settings))
    topics = declare_topics(app, settings)
    sources = recovery.SourcePartitions(app, source_filter(settings))
    table = TableSnapshots(app, topics.snapshots, sources)
    processor = Processor.from_settings(settings, table, kafka_outputs(app, transactions(app, settings)))
    app.preflight = partial(preflight, settings, processor)
    app.on_stopping = (processor.close, *app.on_stopping)
    subscribe(app, settings, topics, processor)
    outputs = (topics.predictions, topics.deadletters)
    rebalance = recovery.Rebalance(app, processor, sources, topics.snapshots, outputs)
    app.model_positions = rebalance.model_positions
    # mode's stubs reject any async receiver here; the signal does await coroutine receivers.
    app.on_partitions_assigned.connect(rebalance.on_assigned)  # type: ignore[arg-type]
    topics.snapshots.on_recover(rebalance.resume_models)
    app.task(freeze_startup_objects)
    app.task(return_large_buffers)
    app.timer(UnknownTopics.EVERY)(UnknownTopics(app).check)
    changelog = topics.snapshots.changelog_topic.get_topic_name()
    web.register(app, processor, settings, changelog, rebalance.lag, sources.source_topic)
    serve_metrics(app, processor, rebalance.lag, lambda: {tp.partition for tp in sources.actives()})
    spec = processor.store.specs[0]
    log.info("streamapp: model %s (%s), %d partitions", spec.name, spec.task, settings.partitions)
    return app
