"""Malformed events go to the dead-letter topic with their reason; nothing else is disturbed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamapp import datasets, models
from streamapp.settings import Settings
from tests.integration.cluster import read_topic, running, send_raw, unique_env
from tests.oracle import river_scores

MAX_EVENT_BYTES = 2048

# (raw value, a piece of the reason it must be refused with)
BAD: list[tuple[bytes | None, str]] = [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b'"just a string"', "not a JSON object"),
    (b'{"id": "nan", "x": {"amount": NaN}}', "non-finite number NaN"),
    (b'{"id": "inf", "x": {"amount": Infinity}}', "non-finite number Infinity"),
    (b'{"id": "big", "x": {"amount": 1e999}}', "non-finite number"),
    (b'{"x": {"amount": 1.0}, "y": true}', "missing 'id'"),
    (b'{"id": 12, "x": {"amount": 1.0}}', "'id' must be a non-empty string"),
    (b'{"id": "nox", "ts": 1.0}', "missing 'x'"),
    (b'{"id": "xlist", "x": [1, 2]}', "'x' must be an object"),
    (b'{"id": "null", "x": {"amount": null}}', "got null"),
    (b'{"id": "nested", "x": {"amount": {"eur": 1}}}', "got dict"),
    (b'{"id": "ylist", "x": {"amount": 1.0}, "y": [true]}', "'y' must be a boolean"),
    (b'{"id": "ts", "x": {"amount": 1.0}, "ts": "yesterday"}', "'ts' must be a finite number"),
    (orjson.dumps({"id": "huge", "x": {f"f{i}": i for i in range(400)}}), "oversized"),
    (None, "empty message"),
]


def test_bad_events_are_dead_lettered_and_only_good_ones_learned(tmp_path: Path) -> None:
    partitions = 2
    env = unique_env(partitions, max_event_bytes=str(MAX_EVENT_BYTES))
    settings = Settings.from_env(env)
    good = list(datasets.load("card", limit=600))
    # Interleave: a bad message after every 37th good one, alternating partitions.
    messages: list[tuple[int, bytes | None, bytes | None]] = []
    expected_reason: dict[bytes | None, str] = {}
    bad = iter(BAD)
    for i, sample in enumerate(good):
        partition = i % partitions
        value = orjson.dumps({"id": sample.id, "x": sample.x, "y": sample.y})
        messages.append((partition, sample.key.encode(), value))
        if i % 37 == 5 and (refused := next(bad, None)) is not None:
            messages.append((partition, b"bad", refused[0]))
            expected_reason[refused[0]] = refused[1]
    assert len(expected_reason) == len(BAD), "every kind of bad event is sent"
    send_raw(settings.events_topic, messages)

    with running(env, tmp_path / "w1") as worker:
        served = worker.wait_caught_up(settings.events_topic, partitions)
        assert worker.alive()

    events = read_topic(settings.events_topic, partitions)
    bad_positions = {
        (p, r.offset): r.value for p, records in events.items() for r in records if r.key == b"bad"
    }
    letters = [r for records in read_topic(settings.deadletter_topic, partitions).values() for r in records]
    assert len(letters) == len(BAD)
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        source = (int(headers["streamapp.source.partition"]), int(headers["streamapp.source.offset"]))
        assert headers["streamapp.source.topic"] == settings.events_topic
        assert source in bad_positions, f"{source} was not a bad event"
        assert letter.value == bad_positions[source], "the raw bytes travel unchanged"
        assert expected_reason[letter.value] in headers["streamapp.error.reason"]
    assert {
        (
            int(dict(letter.headers)["streamapp.source.partition"]),
            int(dict(letter.headers)["streamapp.source.offset"]),
        )
        for letter in letters
    } == set(bad_positions)

    predicted = [
        orjson.loads(r.value)["id"]
        for records in read_topic(settings.predictions_topic, partitions).values()
        for r in records
    ]
    assert sorted(predicted) == sorted(s.id for s in good), "exactly one prediction per good event"

    build = models.resolve(settings.model).build
    for partition, records in events.items():
        good_stream = [(d["x"], d["y"]) for d in (orjson.loads(r.value) for r in records if r.key != b"bad")]
        state = served[partition]
        assert state["events_learned"] == len(good_stream)
        assert state["deadletters"] == sum(1 for r in records if r.key == b"bad")
        expected = river_scores(good_stream, build, ["rocauc", "accuracy", "logloss"])
        got = {k: state["metrics"][k] for k in expected}
        assert got == pytest.approx(expected, abs=1e-9), "the model learned only the good events"
