"""`streamapp create-topics`: the events, predictions and dead-letter topics, with P partitions.

Workers create missing topics themselves; this command lets an operator (or `make run`) create
them up front and tells when an existing events topic has another partition count than
STREAMAPP_PARTITIONS, which would break the one-model-per-partition contract.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.kafka_security import aiokafka_auth, bootstrap_servers, check_access
from streamapp.settings import ConfigError, Settings

_TOPIC_ALREADY_EXISTS = 36


async def create_topics(settings: Settings) -> dict[str, str]:
    """Create what is missing; returns {topic: 'created' | 'exists'}; raises on a partition mismatch."""
    await check_access(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings.broker), **aiokafka_auth(settings)
    )
    await admin.start()
    try:
        # The outputs hold what the workers read (a dead letter, the event): room for any record.
        room = {"max.message.bytes": str(settings.kafka_max_message_bytes)}
        configs = {settings.predictions_topic: room, settings.deadletter_topic: room}
        names = [settings.events_topic, settings.predictions_topic, settings.deadletter_topic]
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    settings.partitions,
                    settings.replication_factor,
                    topic_configs=configs.get(name, {}),
                )
                for name in names
            ]
        )
        result: dict[str, str] = {}
        for name, code, *rest in response.topic_errors:
            if code == 0:
                result[name] = "created"
            elif code == _TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                message = rest[0] if rest else ""
                raise RuntimeError(f"creating topic {name!r} failed: error {code} {message}")
        if result[settings.events_topic] == "created":
            return result  # with our partition count; a fresh topic's metadata may still lag
        described = await admin.describe_topics([settings.events_topic])
        found = len(described[0]["partitions"])
        if found != settings.partitions:
            raise ConfigError(
                f"topic {settings.events_topic!r} has {found} partitions but STREAMAPP_PARTITIONS is "
                f"{settings.partitions}; set STREAMAPP_PARTITIONS={found} or use another topic"
            )
        return result
    finally:
        await admin.close()
