"""Managed-Kafka settings against a real SASL_SSL listener (tools/kafka/kafka.sh gives the local
broker one): a worker authenticates with PLAIN and with SCRAM, learns and emits predictions, and
a wrong password stops it with a message that names the fix and never shows the password."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest

from streamapp import models
from streamapp.producer import produce
from streamapp.settings import Settings
from tests.integration.cluster import (
    BOOTSTRAP,
    SASL_BOOTSTRAP,
    SASL_CAFILE,
    SASL_PASSWORD,
    SASL_PORT,
    SASL_USER,
    Worker,
    port_open,
    read_topic,
    running,
    unique_env,
)
from tests.integration.test_oracle import sub_streams
from tests.oracle import river_predictions

PARTITIONS = 2
EVENTS = 300
WRONG_PASSWORD = "not-the-password-5d81"


@pytest.fixture(scope="module", autouse=True)
def sasl_listener() -> None:
    """Fail, never skip: CI's broker comes from kafka.sh, which always has the listener."""
    if not (port_open(SASL_PORT) and SASL_CAFILE.is_file()):
        pytest.fail(
            f"no SASL_SSL listener on {SASL_BOOTSTRAP} (or no CA at {SASL_CAFILE}): the broker on "
            f"{BOOTSTRAP} was not started by this tools/kafka/kafka.sh (or started before it had the "
            "listener). Start a fresh one: tools/kafka/kafka.sh down && tools/kafka/kafka.sh up "
            "(with the same KAFKA_HOME, KAFKA_PORT and KAFKA_SASL_PORT as this test)"
        )


def sasl_env(mechanism: str, password: str = SASL_PASSWORD) -> dict[str, str]:
    """A fresh app's settings for the SASL_SSL listener; its topics are created over it too."""
    env = unique_env(
        PARTITIONS,
        broker=f"kafka://{SASL_BOOTSTRAP}",
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        sasl_username=SASL_USER,
        sasl_password=SASL_PASSWORD,
        ssl_cafile=str(SASL_CAFILE),
    )
    return {**env, "STREAMAPP_SASL_PASSWORD": password}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_worker_authenticates_learns_and_predicts(mechanism: str, tmp_path: Path) -> None:
    env = sasl_env(mechanism)
    settings = Settings.from_env(env)
    with running(env, tmp_path / "worker") as worker:
        # `streamapp produce`'s producer, over the same listener and credentials.
        sent = asyncio.run(produce(settings, "card", limit=EVENTS, progress=False))
        assert sent == EVENTS
        served = worker.wait_caught_up(settings.events_topic, PARTITIONS, timeout=40)
        assert sum(p["events_learned"] for p in served.values()) == EVENTS
        views = json.dumps(worker.get("/models"))
    # Read back over the plaintext listener: every event has its prediction, and it is the one
    # River's progressive validation makes on that partition's sub-stream (the model learned).
    build = models.resolve("hoeffding_tree").build
    emitted = read_topic(settings.predictions_topic, PARTITIONS)
    for partition, stream in sub_streams(settings.events_topic, PARTITIONS).items():
        mine = sorted((orjson.loads(r.value) for r in emitted[partition]), key=lambda d: d["offset"])
        assert [d["offset"] for d in mine] == list(range(len(stream)))
        river = river_predictions(stream, build, "rocauc")
        assert [d["proba"] for d in mine] == [{str(k).lower(): v for k, v in p.items()} for p in river]
        assert all(d["learned"] for d in mine)
    log = worker.log_path.read_text()
    assert f"SASL_SSL, {mechanism} as user '{SASL_USER}', CAs from {SASL_CAFILE}" in log
    assert SASL_PASSWORD not in log + views


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_wrong_password_stops_the_worker_and_says_why(mechanism: str, tmp_path: Path) -> None:
    worker = Worker(sasl_env(mechanism, password=WRONG_PASSWORD), tmp_path / "worker")
    code = worker.run_until_exit(timeout=30)
    output = worker.log_path.read_text()
    assert code != 0, output
    assert (
        f"Kafka authentication failed at {SASL_BOOTSTRAP}: the broker refused user '{SASL_USER}' "
        f"with SASL {mechanism}" in output
    ), output
    assert "Check STREAMAPP_SASL_USERNAME, STREAMAPP_SASL_PASSWORD and STREAMAPP_SASL_MECHANISM" in output
    assert WRONG_PASSWORD not in output
    assert "Traceback" not in output


def test_an_untrusted_broker_certificate_stops_the_worker(tmp_path: Path) -> None:
    """Without STREAMAPP_SSL_CAFILE the system's CAs apply, and they never signed the test CA."""
    env = {**sasl_env("PLAIN"), "STREAMAPP_SSL_CAFILE": ""}
    worker = Worker(env, tmp_path / "worker")
    code = worker.run_until_exit(timeout=30)
    output = worker.log_path.read_text()
    assert code != 0, output
    assert f"TLS to Kafka at {SASL_BOOTSTRAP} failed: the broker's certificate did not verify" in output
    assert "set STREAMAPP_SSL_CAFILE to the CA that signed it" in output
    assert SASL_PASSWORD not in output
