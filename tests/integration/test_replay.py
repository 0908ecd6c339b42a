"""`streamapp replay` reproduces a worker's past decisions from Kafka alone (the snapshot
changelog, the events, the prediction records) and explains each one."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from streamapp.producer import produce
from streamapp.settings import Settings
from tests.integration.cluster import ROOT, read_topic, running, unique_env

PARTITIONS = 4


def replay(env: dict[str, str], partition: int, offsets: list[int]) -> tuple[int, list[dict[str, Any]]]:
    argv = [sys.executable, "-m", "streamapp", "replay", "--partition", str(partition)]
    for offset in offsets:
        argv += ["--offset", str(offset)]
    done = subprocess.run(argv, env={**os.environ, **env}, cwd=ROOT, capture_output=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr.decode()[-2000:]
    return done.returncode, [orjson.loads(line) for line in done.stdout.splitlines()]


def test_sampled_past_decisions_are_reproduced_and_explained(tmp_path: Path) -> None:
    env = unique_env(PARTITIONS, snapshot_every_events="60", snapshots_kept="3")
    settings = Settings.from_env(env)
    asyncio.run(produce(settings, "phishing", rate=0, label_delay=10, progress=False))
    with running(env, tmp_path / "w1") as worker:
        worker.wait_caught_up(settings.events_topic, PARTITIONS)

    scored: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    for partition, records in read_topic(settings.predictions_topic, PARTITIONS).items():
        scored[partition] = [orjson.loads(r.value)["offset"] for r in records]
    rng = random.Random(11)
    total = 0
    for partition, offsets in scored.items():
        sampled = sorted(rng.sample(offsets, 10))
        status, reports = replay(env, partition, sampled)
        assert status == 0, [r.get("differences") or r.get("error") for r in reports]
        assert [r["offset"] for r in reports] == sampled
        for report in reports:
            assert report["equal"] and report["replayed"]["proba"] == report["recorded"]["proba"]
            assert report["replayed"]["model"]["learned"] == report["recorded"]["model"]["learned"]
            assert report["explanation"]["kind"] == "decision path" and report["explanation"]["text"]
        total += len(reports)
        assert any(r["rebuilt_from"].startswith("snapshot #") for r in reports)
    assert total == 10 * PARTITIONS

    label = next(o for o in range(max(scored[0])) if o not in set(scored[0]))  # a late label's offset
    status, reports = replay(env, 0, [label])
    assert status == 1 and "is no scored event" in reports[0]["error"]
