"""Wiring: the Faust app, its topics, the snapshot table and the one agent, from Settings.

`create_app` has no side effects at import, so tests can build apps with their own settings;
`streamapp.app` builds the one that `faust -A streamapp.app worker` and `streamapp worker` run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import faust
import orjson
from aiokafka.errors import IllegalStateError
from faust.types import TP, StreamT, TopicT

from streamapp import models, web
from streamapp.agent import GapError, Learner
from streamapp.recovery import ConsumerOffsets, resume_at_model_offsets, seek_back
from streamapp.settings import Settings

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


def create_app(settings: Settings) -> faust.App:
    """Build the app; resolving the model here makes a bad STREAMAPP_MODEL fail at start."""
    spec = models.resolve(settings.model, settings.task)
    app = faust.App(
        settings.app_id,
        broker=settings.broker,
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
        # Bound a batch: with large fetches a poll could hold minutes of slow-model work.
        broker_max_poll_records=2000,
        # Let the producer batch predictions for a few ms instead of one request per event.
        producer_linger=0.005,
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

    async def emit(topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        """Straight to Faust's producer: Topic.send's per-record bookkeeping costs more than the
        model on fast models. Commits still flush this producer first (at least once)."""
        future = await app.producer.send(topic, key, value, None, None, headers)
        cast(asyncio.Future, future).add_done_callback(delivered)

    learner = Learner(settings, spec, snapshots, emit, partial(seek_back, app), flush)

    # The agent's name prefixes the repartition topic: include the app id so apps never share one.
    @app.agent(events, name=f"{settings.app_id}-learn", concurrency=1)
    async def learn(stream: StreamT) -> None:
        source = stream
        if settings.key_field:
            source = stream.group_by(key_by_field(settings.key_field), name=settings.key_field)
        async for event in source.events():
            try:
                await learner.handle(event)
            except GapError as exc:
                log.critical("streamapp: %s; stopping the worker", exc)
                await app.crash(exc)
                return

    def is_source(topic: str) -> bool:
        """The topic the agent reads events of: the repartitioned one when STREAMAPP_KEY_FIELD is set."""
        return topic.endswith("-repartition") if settings.key_field else topic == settings.events_topic

    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        # Before any event flows: create the output topics with P partitions rather than let the
        # broker auto-create them with its default of one.
        await predictions.maybe_declare()
        await deadletters.maybe_declare()
        learner.keep_only({tp.partition for tp in assigned if is_source(tp.topic)})

    # mode's stubs reject any async receiver here; the signal does await coroutine receivers.
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    @snapshots.on_recover
    async def resume_models() -> None:
        """After the table is restored, before Faust seeks: move each partition to its model."""
        try:
            actives = {tp for tp in app.assignor.assigned_actives() if is_source(tp.topic)}
            # ConsumerT's stubs omit _commit and seek_to_committed, which the consumer has.
            consumer = cast(ConsumerOffsets, app.consumer)
            await resume_at_model_offsets(learner, consumer, actives)
        except IllegalStateError as exc:
            # A new rebalance took partitions away while this one was being positioned; its own
            # recovery runs this again for the partitions this worker then owns.
            log.warning("streamapp: rebalanced again during recovery (%s); positioning then", exc)
        except Exception as exc:
            # Faust runs recover callbacks under asyncio.wait, which would swallow this.
            log.exception("streamapp: recovery failed, stopping the worker")
            await app.crash(exc)

    web.register(app, learner)
    log.info("streamapp: model %s (%s), %d partitions", spec.name, spec.task, settings.partitions)
    return app
