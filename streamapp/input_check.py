"""At start, before the worker joins its group: the inputs the settings name are there and fit.

The labels topic is the bank's own: it must exist with STREAMAPP_PARTITIONS partitions, so that
partition p of the labels meets partition p of the events (Kafka's default partitioner puts the
same key in the same partition number only when the counts agree). The registry must answer
and take the credentials; with Avro predictions, it must accept their schema. Each failure stops
the worker with what to fix.
"""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient

from streamapp.kafka_security import aiokafka_auth, bootstrap_servers
from streamapp.output_format import AvroPredictions
from streamapp.registry import RegistryUnavailable, SchemaRegistry
from streamapp.settings import ConfigError, Settings

log = logging.getLogger(__name__)

_UNKNOWN_TOPIC = 3


async def check_labels_topic(settings: Settings) -> None:
    """ConfigError unless the labels topic exists, co-partitioned with the events."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings.broker), **aiokafka_auth(settings)
    )
    await admin.start()
    try:
        described = (await admin.describe_topics([settings.labels_topic]))[0]
    finally:
        await admin.close()
    if described.get("error_code") == _UNKNOWN_TOPIC or not described.get("partitions"):
        raise ConfigError(
            f"STREAMAPP_LABELS_TOPIC={settings.labels_topic!r}: no such topic; create it with "
            f"{settings.partitions} partitions (STREAMAPP_PARTITIONS), keyed like the events"
        )
    found = len(described["partitions"])
    if found != settings.partitions:
        raise ConfigError(
            f"STREAMAPP_LABELS_TOPIC={settings.labels_topic!r} has {found} partitions, the events "
            f"{settings.partitions} (STREAMAPP_PARTITIONS): a label would meet another partition "
            "than its event; labels and events must be co-partitioned (same count, same key)"
        )


async def check_registry(settings: Settings) -> None:
    registry = SchemaRegistry.from_settings(settings)
    try:
        await registry.check()
    except RegistryUnavailable as exc:
        raise ConfigError(f"STREAMAPP_SCHEMA_REGISTRY_URL: {exc}") from None
    finally:
        await registry.close()


async def register_predictions(settings: Settings, predictions: AvroPredictions) -> None:
    registry = SchemaRegistry.from_settings(settings)
    try:
        schema_id = await predictions.register(registry, settings.predictions_topic)
    except (RegistryUnavailable, ValueError) as exc:
        raise ConfigError(f"the predictions' Avro schema: {exc}") from None
    finally:
        await registry.close()
    log.info("streamapp: predictions in Avro, schema id %d (%s-value)", schema_id, settings.predictions_topic)


async def preflight(settings: Settings, predictions: AvroPredictions | None = None) -> None:
    """Stop the worker (SystemExit with the reason) when an input does not fit; register the
    predictions' schema when they are Avro."""
    try:
        if settings.labels_topic:
            await check_labels_topic(settings)
        if settings.input_format == "avro":
            await check_registry(settings)
        if predictions is not None:
            await register_predictions(settings, predictions)
    except ConfigError as exc:
        log.critical("streamapp: %s; stopping the worker", exc)
        raise SystemExit(f"streamapp: {exc}") from None
