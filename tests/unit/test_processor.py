"""The Processor routes each Outcome of the partition core to its output, without Kafka: the
outputs are lists (tests/processor_harness.py), everything else is the worker's own code."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord
from faust.types import TP

from streamapp import datasets, producer, snapshot
from streamapp.gaps import MAX_RESEEKS, GapError
from streamapp.partition import Scored
from streamapp.prediction import Times, prediction_record
from streamapp.records import Event
from tests.processor_harness import TOPIC, Harness

STREAM = [value for _, value in producer.messages(datasets.load("phishing", limit=200))]


def batch_of(harness: Harness, offsets: list[int]) -> list[ConsumerRecord]:
    return [ConsumerRecord(TOPIC, 0, o, 1_000, 0, b"k", harness.log[o][0], None, 3, 10, ()) for o in offsets]


def test_every_record_ends_as_one_prediction_or_one_dead_letter_in_offset_order() -> None:
    harness = Harness.build()
    bad = [b"not json", b'{"id": "a", "x": {"f": "' + b"x" * 300 + b'"}}', orjson.dumps({"id": "b"})]
    values = STREAM[:50] + bad + STREAM[50:60]
    harness.feed(values)
    dead = [offset for offset, _ in harness.deadletters]
    predicted = [p["offset"] for p in harness.predictions]
    assert dead == [50, 51, 52] and predicted == [*range(50), *range(53, 63)]
    assert "not JSON" in harness.deadletters[0][1]
    state = harness.state
    assert (state.offset, state.deadletters, state.events_seen) == (62, 3, 60)
    assert harness.processor.timings[0].predictions == 60


def test_a_replayed_fetch_is_skipped_and_the_committable_offset_is_the_model_s() -> None:
    harness = Harness.build()
    harness.feed(STREAM[:30])
    processor = harness.processor
    committable = asyncio.run(
        processor.handle_batch(TP(TOPIC, 0), batch_of(harness, list(range(20))), lambda: True)
    )
    assert committable == 29, "nothing fetched again is applied twice"
    assert harness.state.replays_skipped == 20 and len(harness.predictions) == 30


def test_gaps_are_fetched_again_and_a_partition_that_never_fills_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    harness = Harness.build()
    harness.feed(STREAM[:10])
    harness.log.extend((v, ()) for v in STREAM[10:20])
    clock = iter(range(0, 1000, 3))  # 3 s between two gaps: each may seek back
    monkeypatch.setattr("streamapp.gaps.time.monotonic", lambda: float(next(clock)))
    processor = harness.processor
    for _ in range(MAX_RESEEKS):
        asyncio.run(processor.handle_batch(TP(TOPIC, 0), batch_of(harness, [15]), lambda: True))
    assert harness.seeks == [10] * MAX_RESEEKS and harness.state.gaps == MAX_RESEEKS
    assert harness.state.offset == 9, "never learned across the gap"
    with pytest.raises(GapError, match=r"offsets 10\.\.14 of events never arrive"):
        asyncio.run(processor.handle_batch(TP(TOPIC, 0), batch_of(harness, [15]), lambda: True))


def test_a_partition_taken_away_mid_batch_stops_there() -> None:
    harness = Harness.build()
    harness.log.extend((v, ()) for v in STREAM[:10])
    calls = iter([True, True, True, True, False])
    asyncio.run(
        harness.processor.handle_batch(TP(TOPIC, 0), batch_of(harness, list(range(10))), lambda: next(calls))
    )
    assert harness.state.offset == 2, "the next owner resumes at the model's offset"


def test_snapshots_follow_the_schedule_and_hold_the_offset_they_name() -> None:
    harness = Harness.build(snapshot_every_events="40", snapshots_kept="2")
    harness.feed(STREAM[:200])
    headers = harness.processor.kept_headers(0)
    state = harness.state
    assert state.runtime.snapshot_seq >= 4 and [h.seq for h in headers] == [
        state.runtime.snapshot_seq,
        state.runtime.snapshot_seq - 1,
    ]
    assert len(harness.snapshots) == 2, "kept slots are reused"
    header, restored = snapshot.decode(
        harness.snapshots[f"p0/{headers[0].seq % 2}"], harness.processor.signer, 0
    )
    assert restored.offset == header.offset == state.runtime.snapshot_offset


def test_the_prediction_record_names_the_model_that_made_it() -> None:
    harness = Harness.build()
    harness.feed(STREAM[:3])
    first, _, third = harness.predictions
    assert first["model"]["learned"] == 0 and first["learned"] is True  # the count before, then learned
    assert third["model"]["learned"] == 2
    assert first["key"] == "key" and first["partition"] == 0 and not first["replayed"]
    assert set(first["timings"]) == {"message_latency_s", "predict_s", "learn_s", "end_to_end_s"}


def test_an_anomaly_score_at_the_threshold_is_an_alert() -> None:
    event = Event("e", {"f": 1.0}, None, None)
    version: dict[str, Any] = {"name": "half_space_trees"}
    times = Times(produced=10.0, received=10.5, sent=10.75)

    def record(score: float) -> dict[str, Any]:
        scored = Scored(event, {"score": score}, version, True, 0.001, 0.002, None, False)
        return prediction_record(scored, b"card-1", 3, 42, times, threshold=0.9)

    assert record(0.9)["alert"] is True and record(0.8999)["alert"] is False
    assert record(0.9)["timings"] == {
        "message_latency_s": 0.5,
        "predict_s": 0.001,
        "learn_s": 0.002,
        "end_to_end_s": 0.75,
    }
    assert (record(0.5)["key"], record(0.5)["offset"], "challengers" in record(0.5)) == ("card-1", 42, False)
