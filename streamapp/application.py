"""Wiring: the Faust app, its topics, the snapshot table and the one agent, from Settings.

`create_app` has no side effects at import, so tests can build apps with their own settings;
`streamapp.app` builds the one that `faust -A streamapp.app worker` and `streamapp worker` run.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, MutableMapping, Sequence
from functools import partial
from typing import Any, cast

import faust
import orjson
from aiokafka.errors import IllegalStateError
from faust.types import TP, StreamT, TopicT

from streamapp import kafka_security, models, seam, web
from streamapp.consumer import BatchApp, BatchConsumer
from streamapp.outbox import Outbox
from streamapp.processor import GapError, Processor
from streamapp.prometheus import serve_metrics
from streamapp.recovery import ConsumerOffsets, resume_at_model_offsets, seek_back
from streamapp.settings import Settings
from streamapp.signing import Signer

log = logging.getLogger(__name__)

MIB = 1024 * 1024


# RocksDB memory per partition db: Faust's defaults (3 x 64 MiB memtables, 2 GiB cache) suit one
# big table, but a worker opens one db per partition it serves or stands by for.
SNAPSHOT_TABLE_ROCKSDB = {
    "write_buffer_size": 8 * MIB,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * MIB,
    "block_cache_size": 16 * MIB,
    "block_cache_compressed_size": 0,
}


def key_by_field(field: str) -> Callable[[bytes], bytes]:
    """The repartitioning key for producers that do not key: the event's top-level `field`, else
    the feature x[field] (`streamapp produce --no-key` writes the entity as "entity").

    Malformed values keep an empty key here and are refused by the agent after repartitioning,
    so that the reason is decided in one place.
    """

    def key_of(value: bytes) -> bytes:
        try:
            doc = orjson.loads(value)
            key = doc[field] if field in doc else doc["x"][field]
            return str(key).encode()
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            return b""

    return key_of


def table_writer(app: faust.App, table: MutableMapping[str, bytes]) -> Callable[[TP, str, bytes], None]:
    """Writes to `table` for a partition of the source topic, outside Faust's streams: each
    write runs as if an event of that partition were being processed (seam.current_event)."""

    def write(tp: TP, key: str, value: bytes) -> None:
        with seam.current_event(app, tp):
            table[key] = value

    return write


def create_app(settings: Settings) -> faust.App:
    """Build the app; resolving the model here makes a bad STREAMAPP_MODEL fail at start."""
    signer = Signer.from_settings(settings)  # no key: stop here, with what to set
    spec = models.resolve(settings.model, settings.task)
    challengers = models.resolve_challengers(settings.challengers, spec)
    app = BatchApp(
        settings.app_id,
        broker=settings.broker,
        # TLS and SASL for every Faust client: consumer, both producers, topic creation.
        broker_credentials=kafka_security.faust_credentials(settings),
        store="rocksdb://",
        datadir=settings.datadir,
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        web_bind=settings.web_bind,
        web_host=settings.web_host,
        web_port=settings.web_port,
        # The built-in /table views would serve raw model bytes to anyone.
        web_tables_enabled=False,
        # Snapshots are single records of up to STREAMAPP_MAX_SNAPSHOT_BYTES.
        producer_max_request_size=settings.kafka_max_message_bytes,
        consumer_max_fetch_size=settings.kafka_max_message_bytes,
        # Bound a fetched batch: its last event waits for all before it (500: ~40 ms of a fast
        # model; with large fetches a poll could hold minutes of slow-model work).
        broker_max_poll_records=500,
        # No linger: predictions leave already batched (streamapp/outbox.py); a linger only
        # delayed them (p50 end-to-end 26 ms with 5 ms, 7 ms without, HT at 7,000 events/s).
        producer_linger=0.0,
        # Predictions leave in record batches (streamapp/outbox.py): ~700 of them per 256 KiB.
        producer_max_batch_size=256 * 1024,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 4),
    )

    def raw_topic(name: str, internal: bool = False) -> TopicT:
        """Bytes in, bytes out: the agent decodes events itself, so bad ones reach the dead letters."""
        return app.topic(
            name,
            partitions=settings.partitions,
            internal=internal,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    # internal=True: the worker creates the events topic with the configured partitions if missing.
    events = raw_topic(settings.events_topic, internal=True)
    predictions = raw_topic(settings.predictions_topic)
    deadletters = raw_topic(settings.deadletter_topic)
    snapshots = app.Table(
        "snapshots",
        key_type=str,
        value_type=bytes,
        partitions=settings.partitions,
        # Changelog records buffered per table during recovery: x 64 MiB at worst.
        recovery_buffer_size=4,
        standby_buffer_size=4,
        options=SNAPSHOT_TABLE_ROCKSDB,
        extra_topic_configs={
            "max.message.bytes": str(settings.kafka_max_message_bytes),
            "segment.bytes": str(64 * MIB),
            "min.cleanable.dirty.ratio": "0.1",
            "max.compaction.lag.ms": str(30 * 60 * 1000),
        },
    )

    async def flush() -> None:
        await app.producer.flush()

    def delivered(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.error("streamapp: an output record was not delivered: %r", future.exception())

    async def emit(topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Any) -> None:
        """Straight to Faust's producer: Topic.send's per-record bookkeeping is not needed."""
        future = await app.producer.send(topic, key, value, partition, None, headers)
        cast(asyncio.Future, future).add_done_callback(delivered)

    def outbox(topic: str, partition: int) -> Outbox:
        producer = seam.aiokafka_producer(app.output_producer)
        return Outbox(producer, topic, partition, delivered)

    processor = Processor(
        settings,
        spec,
        challengers,
        snapshots,
        table_writer(app, snapshots),
        emit,
        outbox,
        partial(seek_back, app),
        flush,
        signer,
    )

    def is_source(topic: str) -> bool:
        """The topic the agent reads events of: the repartitioned one when STREAMAPP_KEY_FIELD is set."""
        return topic.endswith("-repartition") if settings.key_field else topic == settings.events_topic

    async def learn_batch(tp: TP, batch: Sequence[Any], still_ours: Callable[[], bool]) -> int | None:
        try:
            return await processor.handle_batch(tp, batch, still_ours)
        except GapError as exc:
            log.critical("streamapp: %s; stopping the worker", exc)
            await app.crash(exc)
            return None

    # The source topic's records reach the processor in fetched batches (streamapp/consumer.py).
    app.batch_route = (is_source, learn_batch)

    async def check_kafka_access() -> None:
        """Refused credentials or an untrusted certificate stop the worker with what to fix,
        instead of aiokafka's "Unable to bootstrap" under a traceback of Faust's services."""
        log.info("streamapp: Kafka %s, %s", settings.broker, kafka_security.describe(settings))
        try:
            await kafka_security.check_access(settings)
        except kafka_security.KafkaAccessError as exc:
            log.critical("streamapp: %s; stopping the worker", exc)
            raise SystemExit(f"streamapp: {exc}") from None

    app.preflight = check_kafka_access

    # The agent subscribes the source topic (so Faust assigns it, co-partitioned with the table)
    # and, with STREAMAPP_KEY_FIELD, repartitions; its name prefixes the repartition topic, so it
    # includes the app id. Its stream never yields: the consumer routes the records around it.
    @app.agent(events, name=f"{settings.app_id}-learn", concurrency=1)
    async def learn(stream: StreamT) -> None:
        source = stream
        if settings.key_field:
            source = stream.group_by(key_by_field(settings.key_field), name=settings.key_field)
        async for event in source.events():
            raise RuntimeError(f"event {event.message.tp}@{event.message.offset} bypassed the batch route")

    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        # Before any event flows: create the output topics with P partitions rather than let the
        # broker auto-create them with its default of one.
        await predictions.maybe_declare()
        await deadletters.maybe_declare()
        processor.keep_only({tp.partition for tp in assigned if is_source(tp.topic)})

    # mode's stubs reject any async receiver here; the signal does await coroutine receivers.
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    @snapshots.on_recover
    async def resume_models() -> None:
        """After the table is restored, before Faust seeks: move each partition to its model."""
        try:
            # The assignor's actives can still be an earlier generation's while recovery runs
            # (seen: a worker resurrected every partition it had before two workers joined):
            # only what the consumer holds now is ours, and nothing else stays in memory.
            held = app.consumer.assignment()
            actives = {tp for tp in app.assignor.assigned_actives() if is_source(tp.topic) and tp in held}
            processor.keep_only({tp.partition for tp in actives})
            # ConsumerT's stubs omit _commit and seek_to_committed, which the consumer has.
            consumer = cast(ConsumerOffsets, app.consumer)
            await resume_at_model_offsets(processor, consumer, actives)
            # The changelog of an active partition has nothing more to give: this worker writes
            # it. Fetched anyway, its records (our own snapshots) stalled fetches (measured: 100
            # ms per partition after its first snapshot; p99 latency 115 -> 30 ms, HT at 7,000/s).
            changelog = snapshots.changelog_topic.get_topic_name()
            # Paused in aiokafka itself: Faust's own pause only filters what it hands on, and a
            # fetched batch nobody drains holds up the next fetch for 100 ms (its prefetch backoff).
            batch_consumer = cast(BatchConsumer, app.consumer)
            await batch_consumer.pause_in_client([TP(changelog, tp.partition) for tp in actives])
        except IllegalStateError as exc:
            # A new rebalance took partitions away while this one was being positioned; its own
            # recovery runs this again for the partitions this worker then owns.
            log.warning("streamapp: rebalanced again during recovery (%s); positioning then", exc)
        except Exception as exc:
            # Faust runs recover callbacks under asyncio.wait, which would swallow this.
            log.exception("streamapp: recovery failed, stopping the worker")
            await app.crash(exc)

    @app.task
    async def freeze_startup_objects() -> None:
        """Put what exists once the worker runs (Faust, River, aiokafka) out of the collector's
        reach: full collections scanned it all and stalled the event loop 50-90 ms (measured)."""
        gc.freeze()

    def lag(partition: int) -> int | None:
        """Events of the source partition not yet applied, from the consumer's last fetch."""
        state = processor.states.get(partition)
        topic = source_topic(partition)
        if state is None or topic is None:
            return None
        highwater = app.consumer.highwater(TP(topic, partition))
        return None if highwater is None else max(0, highwater - state.offset - 1)

    def source_topic(partition: int) -> str | None:
        held = app.consumer.assignment()
        return next((tp.topic for tp in held if tp.partition == partition and is_source(tp.topic)), None)

    changelog = snapshots.changelog_topic.get_topic_name()
    web.register(app, processor, settings, changelog, lag, source_topic)
    serve_metrics(app, processor, lag)
    log.info("streamapp: model %s (%s), %d partitions", spec.name, spec.task, settings.partitions)
    return app
