"""A worker on a real broker learns each partition exactly as River's progressive validation does."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamapp import models
from streamapp.producer import produce
from streamapp.settings import Settings
from tests.integration.cluster import read_topic, running, unique_env
from tests.oracle import river_predictions, river_scores

TOL = 1e-9


def sub_streams(topic: str, partitions: int) -> dict[int, list[tuple[dict[str, Any], Any]]]:
    """Each partition's (x, y) in offset order, read back from the events topic itself."""
    streams = {}
    for partition, records in read_topic(topic, partitions).items():
        docs = [orjson.loads(r.value) for r in records]
        streams[partition] = [(d["x"], d["y"]) for d in docs]
    return streams


@pytest.mark.parametrize("partitions", [1, 4])
def test_phishing_metrics_equal_river_per_partition(tmp_path: Path, partitions: int) -> None:
    # Snapshots every ~200 events: taking them must not disturb the model.
    env = unique_env(partitions, model="hoeffding_tree", snapshot_every_events="200")
    settings = Settings.from_env(env)
    assert asyncio.run(produce(settings, "phishing", rate=0, progress=False)) == 1250

    with running(env, tmp_path / "w1") as worker:
        served = worker.wait_caught_up(settings.events_topic, partitions)

    streams = sub_streams(settings.events_topic, partitions)
    assert sum(len(s) for s in streams.values()) == 1250
    if partitions > 1:
        assert all(len(s) > 100 for s in streams.values()), "keys should spread over every partition"
    build = models.resolve("hoeffding_tree").build
    predictions = {p: [] for p in range(partitions)}  # type: dict[int, list[dict[str, Any]]]
    for partition, records in read_topic(settings.predictions_topic, partitions).items():
        for record in records:
            doc = orjson.loads(record.value)
            assert doc["partition"] == partition == record.partition
            predictions[doc["partition"]].append(doc)

    for partition, stream in streams.items():
        state = served[partition]
        assert state["events_learned"] == state["events_seen"] == len(stream)
        assert state["gaps"] == 0
        expected = river_scores(stream, build, ["rocauc", "accuracy", "f1", "logloss"])
        assert state["metrics"] == pytest.approx(expected, abs=TOL), f"partition {partition}"
        # Every event has exactly one prediction, and it is River's, step by step.
        mine = sorted(predictions[partition], key=lambda d: d["offset"])
        assert [d["offset"] for d in mine] == list(range(len(stream)))
        river = river_predictions(stream, build, "rocauc")
        assert [d["proba"] for d in mine] == [{str(k).lower(): v for k, v in p.items()} for p in river]
        assert all(d["learned"] and not d["replayed"] for d in mine)
        assert state["snapshot"]["seq"] >= 1
