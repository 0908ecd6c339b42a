"""Bad configuration fails at start with a message that names the variable and the fix."""

import pytest

from streamapp.settings import ConfigError, Settings, documented


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.partitions == 8
    assert settings.broker == "kafka://127.0.0.1:9092"
    assert settings.web_bind == "127.0.0.1"


def test_values_are_parsed_and_brokers_normalised() -> None:
    settings = Settings.from_env(
        {
            "STREAMAPP_PARTITIONS": "4",
            "STREAMAPP_BROKER": "h1:9092;kafka://h2:9093",
            "STREAMAPP_SNAPSHOT_EVERY_SECONDS": "2.5",
        }
    )
    assert settings.partitions == 4
    assert settings.broker == "kafka://h1:9092;kafka://h2:9093"
    assert settings.snapshot_every_seconds == 2.5


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMAPP_PARTITIONS": "eight"}, "STREAMAPP_PARTITIONS='eight' is not a whole number"),
        ({"STREAMAPP_PARTITIONS": "0"}, "must be at least 1"),
        ({"STREAMAPP_SNAPSHOT_EVERY_SECONDS": "-1"}, "positive, finite"),
        ({"STREAMAPP_SNAPSHOT_EVERY_SECONDS": "inf"}, "positive, finite"),
        ({"STREAMAPP_EVENTS_TOPIC": "bad topic!"}, "not a valid Kafka topic name"),
        ({"STREAMAPP_BROKER": "nohostport"}, "is not host:port"),
        ({"STREAMAPP_TASK": "clustering"}, "is not one of auto, binary"),
        ({"STREAMAPP_PARTITONS": "3"}, "unknown setting STREAMAPP_PARTITONS"),
        ({"STREAMAPP_PREDICTIONS_TOPIC": "events"}, "must differ"),
        ({"STREAMAPP_MAX_SNAPSHOT_BYTES": "80000000"}, "must be below STREAMAPP_KAFKA_MAX_MESSAGE_BYTES"),
    ],
)
def test_bad_values_say_what_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert message in str(err.value)


def test_every_setting_is_documented_with_its_default() -> None:
    rows = documented()
    assert {name for name, _, _ in rows} >= {"STREAMAPP_BROKER", "STREAMAPP_MODEL", "STREAMAPP_PARTITIONS"}
    assert all(doc for _, _, doc in rows)
    assert Settings.from_env({name: default for name, default, _ in rows}) == Settings.from_env({})
