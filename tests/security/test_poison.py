"""Poison pills against two real workers: each is dead-lettered with its reason, neither worker
stops, and every partition's model equals River's on the messages that were applied."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from river import datasets as river_datasets

from streamapp import datasets, models
from streamapp.records import NO_VALUE
from streamapp.settings import Settings
from tests import custom_models
from tests.integration.cluster import (
    BOOTSTRAP,
    Worker,
    end_offsets,
    read_topic,
    running_all,
    send_raw,
    unique_env,
    wait_for,
)
from tests.integration.test_labels_topic import create_topic
from tests.oracle import river_on_log

TOL = 1e-9
PARTITIONS = 2
SKIP = {"id": "\x00dead-lettered"}

DEEP = b'{"id": "deep", "x": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001  # 70 KB, 10,000 levels
WIDE = orjson.dumps({"id": "wide", "x": {f"f{i}": i for i in range(10_000)}, "y": True})
FORGED = b'{"id": "control-x", "control": "rollback", "seq": 3}'


def classification_pills(x: dict[str, Any]) -> list[tuple[bytes, str]]:
    """(value, a piece of the reason) of each poison pill for a partition of boolean labels; the
    late label "abc" is for the event "w" sent, unlabelled, just before the pills."""
    return [
        (DEEP, "not JSON"),
        (orjson.dumps({"id": "w", "y": "abc"}), "a binary partition learns bool or int"),
        (orjson.dumps({"id": "s", "x": x, "y": "yes"}), "a binary partition learns bool or int"),
        (orjson.dumps({"id": "big", "x": {**x, "amount": 1e308}, "y": False}), "out of range"),
        (orjson.dumps({"id": "small", "x": {**x, "amount": -1e308}, "y": True}), "out of range"),
        (WIDE, "10000 features, over 1000"),
        (FORGED, "unsigned control event"),
    ]


def regression_pills(x: dict[str, Any]) -> list[tuple[bytes, str]]:
    return [
        (DEEP, "not JSON"),
        (orjson.dumps({"id": "w", "y": "abc"}), "a regression partition learns int or float"),
        (orjson.dumps({"id": "s", "x": x, "y": True}), "a regression partition learns int or float"),
        (orjson.dumps({"id": "big", "x": {k: 1e308 for k in x}, "y": 1.0}), "out of range"),
        (orjson.dumps({"id": "y-big", "x": x, "y": -1e308}), "out of range"),
        (WIDE, "10000 features, over 1000"),
        (FORGED, "unsigned control event"),
    ]


def samples(preset: str) -> list[tuple[dict[str, Any], Any]]:
    if preset == "linear_regression":
        return list(itertools.islice(river_datasets.TrumpApproval(), 600))
    return [(s.x, s.y) for s in datasets.load("card", limit=600)]


def log_of(partition: int, stream: list[tuple[dict[str, Any], Any]], preset: str) -> list[tuple[bytes, str]]:
    """One partition's log: good events, an unlabelled one ("w"), the pills, its label, more good
    events. Each value with the reason it must be refused for ("" for good ones)."""
    pills = (regression_pills if preset == "linear_regression" else classification_pills)(stream[0][0])
    good = [
        (orjson.dumps({"id": f"p{partition}-{i}", "x": x, "y": y}), "") for i, (x, y) in enumerate(stream)
    ]
    x, y = stream[-1]
    waiting = [(orjson.dumps({"id": "w", "x": x}), "")]
    label = [(orjson.dumps({"id": "w", "y": y}), "")]
    return good[:250] + waiting + pills + label + good[250:]


def cluster_models(worker: Worker) -> dict[int, dict[str, Any]]:
    doc = worker.get("/models") or {"partitions": []}
    return {p["partition"]: p for p in doc["partitions"] if p.get("status") == "served"}


@pytest.mark.parametrize("preset", ["hoeffding_tree", "linear_regression"])
def test_poison_pills_are_dead_lettered_and_no_worker_stops(tmp_path: Path, preset: str) -> None:
    env = unique_env(PARTITIONS, model=preset, max_event_bytes=str(1 << 20), pending_labels_max="1000")
    settings = Settings.from_env(env)
    stream = samples(preset)
    logs = {p: log_of(p, stream[p::PARTITIONS], preset) for p in range(PARTITIONS)}
    with running_all([Worker(env, tmp_path / f"w{n}") for n in (1, 2)]) as workers:
        urls = {f"http://127.0.0.1:{w.port}" for w in workers}
        # Each worker owns a partition before the pills arrive: a worker that stopped on one
        # would hand its partition to the other, which would stop on it too.
        wait_for(
            "each worker to own a partition",
            lambda: {p["owner"] for p in cluster_models(workers[0]).values()} == urls,
            60,
            workers[0].log_tail,
        )
        send_raw(
            settings.events_topic,
            [(p, f"key-{p}".encode(), value) for p, log in logs.items() for value, _ in log],
        )
        ends = end_offsets(settings.events_topic, PARTITIONS)

        def caught_up() -> bool:
            served = cluster_models(workers[0])
            return all(served.get(p, {}).get("offset_applied") == end - 1 for p, end in ends.items())

        wait_for("both workers to apply every message", caught_up, 120, workers[0].log_tail)
        served = cluster_models(workers[0])
        assert all(worker.alive() for worker in workers), "no worker stopped"
        assert {p["owner"] for p in served.values()} == urls, "and each still owns its partition"

    letters = read_topic(settings.deadletter_topic, PARTITIONS)
    spec = models.resolve(preset)
    metrics = ["mae", "rmse", "r2"] if spec.task == "regression" else ["rocauc", "accuracy", "logloss"]
    predictions = read_topic(settings.predictions_topic, PARTITIONS)
    for partition, log in logs.items():
        refused = {
            int(dict(r.headers)["streamapp.source.offset"]): dict(r.headers)[
                "streamapp.error.reason"
            ].decode()
            for r in letters[partition]
        }
        expected = {offset: reason for offset, (_, reason) in enumerate(log) if reason}
        assert set(refused) == set(expected), f"partition {partition}: exactly the pills are dead letters"
        for offset, reason in expected.items():
            assert reason in refused[offset], (offset, refused[offset])
        docs = [SKIP if offset in refused else orjson.loads(value) for offset, (value, _) in enumerate(log)]
        scores, river, _ = river_on_log(
            docs, spec.build, metrics, "predict_one" if spec.task == "regression" else "predict_proba_one"
        )
        state = served[partition]
        assert state["deadletters"] == len(expected) and state["labels_late"] == 1
        assert {k: state["metrics"][k] for k in metrics} == pytest.approx(scores, abs=TOL)
        field = "value" if spec.task == "regression" else "proba"
        emitted = {
            orjson.loads(r.value)["offset"]: orjson.loads(r.value)[field] for r in predictions[partition]
        }
        assert emitted == {
            o: orjson.loads(orjson.dumps(p, option=orjson.OPT_NON_STR_KEYS)) for o, p in river.items()
        }


def test_a_model_that_fails_half_way_through_learning_is_rewound_by_a_real_worker(tmp_path: Path) -> None:
    """A custom model that raises after it changed itself: the worker puts the partition back
    (its snapshot, replayed from the log) and dead-letters that record; the model then equals
    River's on every other event, as if the record had never come."""
    boom = 150
    env = unique_env(1, model="tests.custom_models:exploding_tree", snapshot_every_events="50")
    settings = Settings.from_env(env)
    values = [
        orjson.dumps({"id": s.id, "x": {**s.x, "boom": int(i == boom)}, "y": s.y})
        for i, s in enumerate(datasets.load("phishing", limit=300))
    ]
    send_raw(settings.events_topic, [(0, b"k", value) for value in values])
    worker = Worker(env, tmp_path / "w1").start()
    try:
        served = worker.wait_caught_up(settings.events_topic, 1)
        assert worker.alive()
    finally:
        worker.stop()
    (state,) = served.values()
    assert state["model_errors"] == 1 and state["deadletters"] == 1
    (letter,) = read_topic(settings.deadletter_topic, 1)[0]
    headers = dict(letter.headers)
    assert headers["streamapp.source.offset"] == str(boom).encode()
    assert headers["streamapp.error.reason"] == b"model error: RuntimeError: boom after learning"
    docs = [SKIP if i == boom else orjson.loads(v) for i, v in enumerate(values)]
    scores, _, _ = river_on_log(docs, custom_models.plain_tree, ["rocauc", "accuracy", "logloss"])
    assert {k: state["metrics"][k] for k in scores} == pytest.approx(scores, abs=TOL)
    assert "MODEL ERROR at offset 150" in worker.log_path.read_text()


def send_without_key_and_value(topic: str, partition: int) -> None:
    """A record with neither key nor value: Kafka takes it, aiokafka's send() refuses to write
    one (its batch API does not)."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
        await producer.start()
        try:
            batch = producer.create_batch()
            batch.append(key=None, value=None, timestamp=None)
            batch.close()
            await (await producer.send_batch(batch, topic, partition=partition))
        finally:
            await producer.stop()

    asyncio.run(send())


#: the broker's default max.message.bytes (1 MiB + 12), which the events topic has here
TOPIC_LIMIT = 1_048_588


@pytest.mark.parametrize("labels_topic", [False, True], ids=["events topic", "with a labels topic"])
def test_a_record_at_the_topic_s_size_limit_or_with_nothing_in_it_is_dead_lettered(
    tmp_path: Path, labels_topic: bool
) -> None:
    """Two records Kafka takes on the events topic and a worker must not choke on: one just
    under the topic's size limit (its dead letter, or its copy in the sequence topic, is larger
    than the record: seen stopping the worker, and every worker its partition moved to), and one
    with neither key nor value (aiokafka refuses to send such a record on). Each is dead-lettered
    with its reason, the worker goes on, and the next event is learned."""
    extra = {}
    if labels_topic:
        extra["labels_topic"] = f"labels-{uuid.uuid4().hex[:8]}"
        asyncio.run(create_topic(extra["labels_topic"], 1))
    env = unique_env(1, **extra)
    settings = Settings.from_env(env)
    good = [orjson.dumps({"id": s.id, "x": s.x, "y": s.y}) for s in datasets.load("card", limit=3)]
    head = b'{"id": "huge", "x": {"a": 1.0}, "pad": "'
    huge = head + b"a" * (TOPIC_LIMIT - 120 - len(head)) + b'"}'  # the record batch: ~1,048,540 bytes
    with running_all([Worker(env, tmp_path / "w1")]) as (worker,):
        send_raw(settings.events_topic, [(0, b"k", good[0]), (0, b"k", huge)])
        send_without_key_and_value(settings.events_topic, 0)
        send_raw(settings.events_topic, [(0, b"k", value) for value in good[1:]])
        wait_for(
            "the worker to apply all five records",
            lambda: (
                (worker.models().get(0) or {}).get("sources" if labels_topic else "offset_applied")
                in ({"events": 4}, 4)
            ),
            60,
            worker.log_tail,
        )
        assert worker.alive()
        state = worker.models()[0]
    assert state["deadletters"] == 2 and state["events_learned"] == 3
    letters = {
        int(dict(r.headers)["streamapp.source.offset"]): r
        for r in read_topic(settings.deadletter_topic, 1)[0]
    }
    assert sorted(letters) == [1, 2]
    reasons = {offset: dict(r.headers)["streamapp.error.reason"].decode() for offset, r in letters.items()}
    assert reasons[1].startswith(f"oversized: {len(huge)} bytes > limit 65536") and reasons[2] == NO_VALUE
    # The dead letter holds the record itself; from the sequence topic, it names where it is.
    assert letters[1].value == (b"" if labels_topic else huge)
    assert dict(letters[1].headers)["streamapp.source.topic"] == settings.events_topic.encode()
