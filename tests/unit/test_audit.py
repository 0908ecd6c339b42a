"""A past decision is reproduced from the kept snapshots and the log, through the worker's own
path, and explained: the replay's prediction and model version equal the prediction record."""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord
from faust.types import TP

from streamapp import audit, datasets, producer
from tests.processor_harness import TOPIC, Harness, build_processor

AT = 1_800_000_000.0
LOG_VERSION = ("name", "learned", "resets", "rollbacks")  # what the log alone determines


SETTINGS = {"snapshot_every_events": "60", "snapshots_kept": "3"}


def recorded_run(**settings: str) -> tuple[Harness, list[ConsumerRecord]]:
    """A worker's run over 400 phishing events with labels 10 events late, plus two bad records."""
    harness = Harness.build(**SETTINGS, **settings)
    values = [v for _, v in producer.messages(datasets.load("phishing", limit=400), label_delay=10)]
    values[100:100] = [b"not json", b'{"id": "x", "x": {"f": 1}, "y": "maybe"}']
    harness.feed(values, at=AT)
    log = [
        ConsumerRecord(TOPIC, 0, offset, int(AT * 1000), 0, b"key", value, None, 3, 10, tuple(headers))
        for offset, (value, headers) in enumerate(harness.log)
    ]
    return harness, log


def check(
    harness: Harness, log: list[ConsumerRecord], offsets: list[int], **settings: str
) -> list[audit.Reproduced]:
    """Each offset's decision replayed by a new processor over the run's kept snapshots."""
    processor = build_processor(harness.snapshots, **SETTINGS, **settings)
    by_offset = {p["offset"]: p for p in harness.predictions}
    oldest_kept = min(h.offset for h in processor.kept_headers(0))
    results = []
    for offset in offsets:
        recorded = by_offset[offset]
        again = audit.reproduce(processor, TP(TOPIC, 0), offset, log)
        scored = again.scored
        assert scored.prediction["class"] == recorded["class"], offset
        assert {str(k).lower(): v for k, v in scored.prediction["proba"].items()} == recorded["proba"], offset
        assert {k: scored.version[k] for k in LOG_VERSION} == {k: recorded["model"][k] for k in LOG_VERSION}
        if offset > oldest_kept:  # the newest snapshot before it is kept: the whole version repeats
            assert scored.version == recorded["model"], offset
            assert again.source.startswith("snapshot #")
        results.append(again)
    return results


def test_a_hundred_past_decisions_are_reproduced_exactly() -> None:
    harness, log = recorded_run()
    sampled = sorted(random.Random(7).sample([p["offset"] for p in harness.predictions], 100))
    results = check(harness, log, sampled)
    sources = {r.source.split(" (")[0] for r in results}
    assert "the start of the log" in sources and len(sources) > 2, "from the log's start and from snapshots"
    assert all(r.explanation["kind"] == "decision path" and r.explanation["text"] for r in results)


def test_a_linear_decision_is_explained_by_contributions_that_add_up_to_it() -> None:
    harness, log = recorded_run(model="logistic_regression")
    sampled = sorted(random.Random(3).sample([p["offset"] for p in harness.predictions], 20))
    for again in check(harness, log, sampled, model="logistic_regression"):
        explanation: dict[str, Any] = again.explanation
        assert explanation["kind"] == "contributions"
        logit = explanation["intercept"] + sum(c["contribution"] for c in explanation["top"])
        assert 1 / (1 + math.exp(-logit)) == pytest.approx(again.scored.prediction["proba"][True], abs=1e-9)


def test_what_is_no_scored_event_or_not_in_the_log_is_not_reproduced() -> None:
    harness, log = recorded_run()
    processor = build_processor(harness.snapshots, **SETTINGS)
    dead = dict(harness.deadletters)
    assert set(dead) == {100, 101}
    with pytest.raises(audit.NotReproducible, match="offset 100 of partition 0 is no scored event"):
        audit.reproduce(processor, TP(TOPIC, 0), 100, log)
    with pytest.raises(audit.NotReproducible, match="ends before offset 5000"):
        audit.reproduce(processor, TP(TOPIC, 0), 5000, log)


def test_decisions_are_reproduced_with_the_record_time_of_a_mapping() -> None:
    """With STREAMAPP_TIMESTAMP_FIELD the record's own time ages the waiting events; a replay
    that took the Kafka timestamp instead would let other events expire (here: every fifth event
    is stamped two days early, and events wait one day at most)."""
    mapped = {
        "id_field": "txn",
        "label_field": "fraud",
        "features": "f.*",
        "timestamp_field": "t",
        "pending_labels_max_age": "86400",
    }
    harness = Harness.build(**SETTINGS, **mapped)
    values = []
    for _, value in producer.messages(datasets.load("phishing", limit=300), label_delay=10):
        doc = orjson.loads(value)
        record = {"txn": doc["id"], "f": doc.get("x"), "fraud": doc.get("y")}
        if "x" in doc:
            record["t"] = AT - (2 * 86400 if int(doc["id"].rsplit("-", 1)[-1]) % 5 == 0 else 0)
        values.append(orjson.dumps({k: v for k, v in record.items() if v is not None}))
    harness.feed(values, at=AT)
    assert harness.state.waiting.expired > 0, "the record times decided something"
    log = [
        ConsumerRecord(TOPIC, 0, offset, int(AT * 1000), 0, b"key", value, None, 3, 10, tuple(headers))
        for offset, (value, headers) in enumerate(harness.log)
    ]
    scored = sorted(p["offset"] for p in harness.predictions)
    check(harness, log, random.Random(5).sample(scored, 40), **mapped)
