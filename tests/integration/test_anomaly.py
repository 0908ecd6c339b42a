"""Anomaly detection live: every prediction of HalfSpaceTrees carries its score and an alert
decided by STREAMAPP_ANOMALY_THRESHOLD, and the worker counts the alerts it raised."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from streamapp.producer import produce
from streamapp.settings import Settings
from tests.integration.cluster import read_topic, running, unique_env

THRESHOLD = 0.6


def test_anomaly_scores_become_alerts_at_the_threshold(tmp_path: Path) -> None:
    env = unique_env(2, model="half_space_trees", anomaly_threshold=str(THRESHOLD))
    settings = Settings.from_env(env)
    sent = asyncio.run(produce(settings, "card", rate=0, limit=1500, progress=False))
    with running(env, tmp_path / "w1") as worker:
        served = worker.wait_caught_up(settings.events_topic, 2)
    predictions = [
        orjson.loads(r.value) for rs in read_topic(settings.predictions_topic, 2).values() for r in rs
    ]
    assert len(predictions) == sent
    assert all(p["alert"] == (p["score"] >= THRESHOLD) for p in predictions)
    raised = sum(p["alert"] for p in predictions)
    assert 0 < raised < len(predictions), f"{raised} alerts of {len(predictions)}: pick another threshold"
    assert sum(s["alerts"] for s in served.values()) == raised
