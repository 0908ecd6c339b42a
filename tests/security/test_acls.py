"""Kafka ACLs, enforced by a real broker: one credential per role, each allowed only its part.

tools/kafka/kafka.sh starts the local broker with KRaft's StandardAuthorizer on its SASL_SSL
listener (deny unless allowed) and applies tools/kafka/acls.txt: users "worker", "producer" and
"keda". Here a real worker runs end to end as "worker"; "producer" and "keda" then try what their
role must not do, against the topics and group of that very app (its changelog and leader topic
exist, its group has committed offsets), and the broker refuses.

Run against a second broker of your own while the shared one serves others:
  KAFKA_HOME=/tmp/kafka-acl KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 KAFKA_SASL_PORT=19094 \
    tools/kafka/kafka.sh up
and pytest with the same variables.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)

from streamapp import models
from streamapp.kafka_security import aiokafka_auth
from streamapp.producer import produce
from streamapp.settings import Settings
from tests.integration.cluster import (
    BOOTSTRAP,
    ROOT,
    SASL_BOOTSTRAP,
    SASL_CAFILE,
    SASL_PORT,
    end_offsets,
    port_open,
    read_topic,
    running,
    unique_env,
    wait_for,
)
from tests.integration.test_oracle import sub_streams
from tests.oracle import river_predictions

PARTITIONS = 2
EVENTS = 400
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ACL_FILE = ROOT / "tools/kafka/acls.txt"
SERVER_PROPERTIES = ROOT / "tools/kafka/server.properties"
BROKER_LOG = SASL_CAFILE.parent.parent / "kafka.log"
TOPIC_AUTHORIZATION_FAILED = 29
# What a refusal looks like in a client's log (aiokafka's and Faust's words for Kafka's errors).
REFUSAL = re.compile(r"AuthorizationFailed|Authorization failed|not authorized", re.IGNORECASE)
TIMEOUT = 30.0


def role_env(base: dict[str, str], user: str, mechanism: str) -> dict[str, str]:
    """`base`'s app as one role's user of kafka.sh's SASL_SSL listener (password '<user>-secret')."""
    return {
        **base,
        "STREAMAPP_BROKER": f"kafka://{SASL_BOOTSTRAP}",
        "STREAMAPP_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMAPP_SASL_MECHANISM": mechanism,
        "STREAMAPP_SASL_USERNAME": user,
        "STREAMAPP_SASL_PASSWORD": f"{user}-secret",
        "STREAMAPP_SSL_CAFILE": str(SASL_CAFILE),
    }


def client_args(env: dict[str, str]) -> dict[str, Any]:
    settings = Settings.from_env(env)
    return {"bootstrap_servers": SASL_BOOTSTRAP, "request_timeout_ms": 20000, **aiokafka_auth(settings)}


def run(check: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(check(), TIMEOUT))


@dataclass(frozen=True)
class App:
    """A worker's app after it ran as "worker": its settings (no credentials) and its topics."""

    base: dict[str, str]
    settings: Settings
    changelog: str
    leader: str
    worker_log: Path
    committed: dict[int, int]
    #: the broker's authorizer log lines "User:worker is Denied ..." while the worker ran
    denials: list[str]


@pytest.fixture(scope="module", autouse=True)
def authorizing_listener() -> None:
    """Fail, never skip: kafka.sh always starts the listener with the authorizer and the users."""
    if not (port_open(SASL_PORT) and SASL_CAFILE.is_file()):
        pytest.fail(
            f"no SASL_SSL listener on {SASL_BOOTSTRAP} (or no CA at {SASL_CAFILE}): start a broker "
            "with tools/kafka/kafka.sh (same KAFKA_HOME, KAFKA_PORT and KAFKA_SASL_PORT as this test)"
        )


async def committed_offsets(group: str, env: dict[str, str] | None = None) -> dict[int, int]:
    """The group's committed offsets, as the super user (env None) or a role sees them."""
    args = client_args(env) if env else {"bootstrap_servers": BOOTSTRAP}
    admin = AIOKafkaAdminClient(**args)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    """One app, run end to end under the ACLs: its topics made up front by an operator (the super
    user, as `streamapp create-topics` or a KafkaTopic would), events written as "producer" over
    PLAIN, a worker as "worker" over SCRAM-SHA-512 that learns, predicts and snapshots."""
    base = unique_env(PARTITIONS, snapshot_every_events="50")
    app_id = base["STREAMAPP_APP_ID"]
    settings = Settings.from_env(base)
    worker_env = role_env(base, "worker", "SCRAM-SHA-512")
    log_start = broker_log_size()
    with running(worker_env, tmp_path_factory.mktemp("acl") / "worker") as worker:
        sent = asyncio.run(
            produce(
                Settings.from_env(role_env(base, "producer", "PLAIN")), "card", limit=EVENTS, progress=False
            )
        )
        assert sent == EVENTS
        served = worker.wait_caught_up(settings.events_topic, PARTITIONS, timeout=60)
        assert sum(p["events_learned"] for p in served.values()) == EVENTS
        assert all(p["snapshot"]["seq"] > 0 for p in served.values()), served
    changelog = f"{app_id}-snapshots-changelog"
    committed = asyncio.run(committed_offsets(app_id))
    denials = [line for line in broker_log_since(log_start) if "User:worker is Denied" in line]
    leader = f"{app_id}-__assignor-__leader"
    return App(base, settings, changelog, leader, worker.log_path, committed, denials)


def broker_log_size() -> int:
    return BROKER_LOG.stat().st_size if BROKER_LOG.is_file() else 0


def broker_log_since(offset: int) -> list[str]:
    """The broker's log lines after `offset` (a broker kafka.sh started: its authorizer logs every
    denial at INFO); none for a broker started otherwise."""
    if not BROKER_LOG.is_file():
        return []
    with BROKER_LOG.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace").splitlines()


# ------------------------------------------------------------------------------------- worker


def test_worker_runs_end_to_end_under_its_acls(app: App) -> None:
    # Its own topics: the worker created the changelog and wrote snapshots into it.
    assert sum(end_offsets(app.changelog, PARTITIONS).values()) >= PARTITIONS
    # Every event has its prediction, and it is River's (the model learned every event).
    build = models.resolve("hoeffding_tree").build
    emitted = read_topic(app.settings.predictions_topic, PARTITIONS)
    for partition, stream in sub_streams(app.settings.events_topic, PARTITIONS).items():
        mine = sorted((orjson.loads(r.value) for r in emitted[partition]), key=lambda d: d["offset"])
        assert [d["offset"] for d in mine] == list(range(len(stream)))
        river = river_predictions(stream, build, "rocauc")
        assert [d["proba"] for d in mine] == [{str(k).lower(): v for k, v in p.items()} for p in river]
    # It committed its progress in its group: what KEDA reads.
    assert sum(app.committed.values()) == EVENTS
    log = app.worker_log.read_text()
    assert "SASL_SSL, SCRAM-SHA-512 as user 'worker'" in log
    assert not REFUSAL.findall(log), [line for line in log.splitlines() if REFUSAL.search(line)]
    assert not app.denials, app.denials


def test_worker_is_refused_what_it_does_not_need(app: App) -> None:
    env = role_env(app.base, "worker", "SCRAM-SHA-256")
    uid = app.settings.app_id.removeprefix("it-")
    # Its outputs are write-only: it never reads predictions or dead letters back.
    for topic in (app.settings.predictions_topic, app.settings.deadletter_topic):
        with pytest.raises(TopicAuthorizationFailedError):
            run(lambda topic=topic: fetch_one(env, topic))
    # No topics outside its app id, no other group.
    assert run(lambda: create_topic(env, f"other-{uid}")) == TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(GroupAuthorizationFailedError):
        run(lambda: join_group(env, f"other-{uid}", app.settings.events_topic))


def test_a_repartitioning_worker_runs_under_its_acls(tmp_path: Path) -> None:
    """STREAMAPP_KEY_FIELD: the worker also creates, writes and reads its repartition topic,
    "{app id}-learn-{events topic}-{field}-repartition", within the same grants."""
    base = unique_env(PARTITIONS, key_field="entity")
    settings = Settings.from_env(base)
    producer = Settings.from_env(role_env(base, "producer", "SCRAM-SHA-256"))
    log_start = broker_log_size()
    with running(role_env(base, "worker", "PLAIN"), tmp_path / "worker") as worker:
        assert asyncio.run(produce(producer, "card", limit=EVENTS, keyed=False, progress=False)) == EVENTS

        def learned() -> int:
            return sum(p["events_learned"] for p in worker.models().values())

        wait_for(f"{EVENTS} events learned", lambda: learned() == EVENTS, 60, worker.log_tail)
    repartition = f"{settings.app_id}-learn-{settings.events_topic}-entity-repartition"
    assert sum(end_offsets(repartition, PARTITIONS).values()) == EVENTS
    assert sum(len(r) for r in read_topic(settings.predictions_topic, PARTITIONS).values()) == EVENTS
    log = worker.log_path.read_text()
    assert not REFUSAL.findall(log), [line for line in log.splitlines() if REFUSAL.search(line)]
    denials = [line for line in broker_log_since(log_start) if "User:worker is Denied" in line]
    assert not denials, denials


# ----------------------------------------------------------------------------------- producer


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_producer_writes_events_and_nothing_else(app: App, mechanism: str) -> None:
    env = role_env(app.base, "producer", mechanism)
    events = app.settings.events_topic
    before = {t: end_offsets(t, n) for t, n in protected_topics(app)}
    # Its one right, with the idempotent producer streamapp produce uses (Kafka 4: WRITE on a
    # topic is enough for an idempotent producer id, no IDEMPOTENT_WRITE on the cluster).
    assert run(lambda: write_one(env, events)) >= 0
    # Forged snapshots, predictions, dead letters or assignments: refused.
    for topic, _ in protected_topics(app):
        with pytest.raises(TopicAuthorizationFailedError):
            run(lambda topic=topic: write_one(env, topic))
    assert {t: end_offsets(t, n) for t, n in protected_topics(app)} == before
    # It reads nothing, not even events; it cannot create topics nor use the workers' group.
    with pytest.raises(TopicAuthorizationFailedError):
        run(lambda: fetch_one(env, events))
    assert run(lambda: create_topic(env, f"{app.settings.app_id}-forged")) == TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(GroupAuthorizationFailedError):
        run(lambda: join_group(env, app.settings.app_id, events))
    with pytest.raises(GroupAuthorizationFailedError):
        run(lambda: committed_offsets(app.settings.app_id, env))


def protected_topics(app: App) -> list[tuple[str, int]]:
    """(topic, partitions): the workers' own topics and outputs (Faust's leader topic has one)."""
    outputs = [app.changelog, app.settings.predictions_topic, app.settings.deadletter_topic]
    return [*((topic, PARTITIONS) for topic in outputs), (app.leader, 1)]


# --------------------------------------------------------------------------------------- keda


def test_keda_reads_the_lag_and_nothing_else(app: App) -> None:
    env = role_env(app.base, "keda", "SCRAM-SHA-512")
    events = app.settings.events_topic
    # What the kafka scaler computes lag from: the group's committed offsets and the topic's
    # partitions and end offsets, the same numbers the super user sees.
    assert run(lambda: committed_offsets(app.settings.app_id, env)) == app.committed
    ends = run(lambda: end_offsets_as(env, events))
    assert ends == end_offsets(events, PARTITIONS)
    lag = sum(ends[p] - app.committed[p] for p in range(PARTITIONS))
    assert lag >= 0
    described = run(lambda: describe_group(env, app.settings.app_id))
    assert described[0] == 0, described
    # No record read or written, no group joined or offset moved (a reset would replay or skip
    # events), no other group's or topic's data.
    with pytest.raises(TopicAuthorizationFailedError):
        run(lambda: fetch_one(env, events))
    with pytest.raises(TopicAuthorizationFailedError):
        run(lambda: write_one(env, events, idempotent=False))
    # An idempotent producer needs WRITE on some topic for its producer id: keda has none.
    with pytest.raises(ClusterAuthorizationFailedError):
        run(lambda: write_one(env, events))
    with pytest.raises(GroupAuthorizationFailedError):
        run(lambda: join_group(env, app.settings.app_id, events))
    # Of all topics it sees the events topic alone: not even the changelog's partitions.
    assert run(lambda: topic_errors(env, [events, app.changelog])) == {
        events: 0,
        app.changelog: TOPIC_AUTHORIZATION_FAILED,
    }
    visible = run(lambda: visible_topics(env))
    assert events in visible
    assert all(t == "events" or t.startswith("events-") for t in visible), visible
    uid = app.settings.app_id.removeprefix("it-")
    with pytest.raises(GroupAuthorizationFailedError):
        run(lambda: committed_offsets(f"other-{uid}", env))
    assert run(lambda: create_topic(env, f"{app.settings.app_id}-forged")) == TOPIC_AUTHORIZATION_FAILED
    assert run(lambda: committed_offsets(app.settings.app_id)) == app.committed


# ------------------------------------------------------------------------ the ACL file itself


def acl_lines() -> list[list[str]]:
    lines = (re.sub(r"#.*", "", line).split() for line in ACL_FILE.read_text().splitlines())
    return [fields for fields in lines if fields]


def test_the_acl_file_grants_each_role_only_its_part() -> None:
    """The file kafka.sh applies: no cluster, transactional or token rights, no wildcard, no
    ALL, no DENY (an ALLOW that is not there is the refusal); per role only its operations."""
    allowed = {
        "User:worker": {"READ", "WRITE", "CREATE"},
        "User:producer": {"WRITE"},
        "User:keda": {"DESCRIBE"},
    }
    grants: dict[str, set[tuple[str, str, str, str]]] = {user: set() for user in allowed}
    for fields in acl_lines():
        assert len(fields) == 6, fields
        principal, permission, operations, resource, pattern, name = fields
        assert principal in allowed, fields
        assert permission == "ALLOW", fields
        assert resource in ("TOPIC", "GROUP"), fields
        assert pattern in ("LITERAL", "PREFIXED"), fields
        assert name not in ("*", "") and len(name) >= 3, fields
        for operation in operations.split(","):
            assert operation in allowed[principal], fields
            grants[principal].add((operation, resource, pattern, name))
    assert {g for g in grants["User:producer"]} == {
        ("WRITE", "TOPIC", "LITERAL", "events"),
        ("WRITE", "TOPIC", "PREFIXED", "events-"),
    }
    assert all(resource == "TOPIC" or op == "READ" for op, resource, _, _ in grants["User:worker"])
    create = {(pattern, name) for op, _, pattern, name in grants["User:worker"] if op == "CREATE"}
    # The worker creates only its own topics, all named "{app id}-...".
    assert create == {("PREFIXED", "streamapp-"), ("PREFIXED", "it-")}
    properties = dict(
        line.split("=", 1)
        for line in SERVER_PROPERTIES.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert properties["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert set(properties["super.users"].split(";")) == {"User:ANONYMOUS", "User:streamapp"}


# ------------------------------------------------------------------------------------ clients


async def write_one(env: dict[str, str], topic: str, idempotent: bool = True) -> int:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=idempotent, **client_args(env))
    try:
        await producer.start()
        sent = await producer.send_and_wait(topic, b'{"forged": true}', partition=0)
        return int(sent.offset)
    finally:
        await producer.stop()


async def fetch_one(env: dict[str, str], topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_args(env))
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        for _ in range(20):
            batch = await consumer.getmany(tp, timeout_ms=1000)
            if batch:
                return list(batch[tp])
        return []
    finally:
        await consumer.stop()


async def join_group(env: dict[str, str], group: str, topic: str) -> None:
    consumer = AIOKafkaConsumer(topic, group_id=group, enable_auto_commit=False, **client_args(env))
    try:
        await consumer.start()
        for _ in range(20):
            await consumer.getmany(timeout_ms=1000)
    finally:
        await consumer.stop()


async def end_offsets_as(env: dict[str, str], topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**client_args(env))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def topic_errors(env: dict[str, str], topics: list[str]) -> dict[str, int]:
    """The Metadata request's error code per topic (0: described)."""
    admin = AIOKafkaAdminClient(**client_args(env))
    await admin.start()
    try:
        return {t["topic"]: int(t["error_code"]) for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def visible_topics(env: dict[str, str]) -> set[str]:
    """The topics a listing of all topics shows this user."""
    admin = AIOKafkaAdminClient(**client_args(env))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def create_topic(env: dict[str, str], topic: str) -> int:
    """The broker's error code for creating `topic` (0: created)."""
    admin = AIOKafkaAdminClient(**client_args(env))
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, 1, 1)])
        return int(response.topic_errors[0][1])
    finally:
        await admin.close()


async def describe_group(env: dict[str, str], group: str) -> tuple[int, str]:
    """(error code, state) of the group, as DescribeGroups answers it."""
    admin = AIOKafkaAdminClient(**client_args(env))
    await admin.start()
    try:
        response = (await admin.describe_consumer_groups([group]))[0]
        error, _, state = response.groups[0][:3]
        return int(error), str(state)
    except KafkaError:
        raise
    finally:
        await admin.close()
