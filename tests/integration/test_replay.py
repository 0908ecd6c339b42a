"""`streamapp replay` reproduces a worker's past decisions from Kafka alone (the snapshot
changelog, the events, the prediction records) and explains each one, after a run in which a
worker was SIGKILLed mid-stream; `GET /models/{partition}/explain` answers as it does."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from streamapp.settings import Settings
from tests.integration.chaos import Cluster, run_stream
from tests.integration.cluster import ROOT, Worker, end_offsets, read_topic, unique_env, wait_for

PARTITIONS = 4
EVENTS = 2000
RATE = 100  # events/s: a 20 s stream; w2 is killed 5 s in and restarted at 10 s
TOKEN = "replay-api-token-0123456789abcdef"
SAMPLED = 100
#: what the log alone determines of a model version (snapshot_seq also depends on when the
#: workers took their snapshots: see docs/operations.md, "Reproducing a past decision")
LOG_VERSION = ("name", "learned", "resets", "rollbacks")


def replay(env: dict[str, str], partition: int, offsets: list[int]) -> tuple[int, list[dict[str, Any]]]:
    argv = [sys.executable, "-m", "streamapp", "replay", "--partition", str(partition)]
    for offset in offsets:
        argv += ["--offset", str(offset)]
    done = subprocess.run(argv, env={**os.environ, **env}, cwd=ROOT, capture_output=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr.decode()[-2000:]
    return done.returncode, [orjson.loads(line) for line in done.stdout.splitlines()]


def explain(worker: Worker, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


@dataclass
class Run:
    """A finished run: its cluster (still serving), and every copy of every prediction record."""

    cluster: Cluster
    settings: Settings
    copies: dict[int, dict[int, list[dict[str, Any]]]]  # partition -> offset -> in the order written


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Two workers; a card stream with labels 10 events late, during which w2 is SIGKILLed and
    restarted; then every partition caught up."""
    env = unique_env(
        PARTITIONS, snapshot_every_events="60", snapshots_kept="3", api_token=TOKEN, session_timeout="6"
    )
    settings = Settings.from_env(env)
    cluster = Cluster(env, tmp_path_factory.mktemp("replay"))
    try:
        cluster.start_all("w1", "w2")

        def spread() -> bool:
            return {w.datadir.name for _, w in cluster.served().values()} == {"w1", "w2"}

        wait_for("the partitions to spread over both workers", spread, 90, cluster.logs)
        kill = (5.0, lambda: cluster.stop("w2", signal.SIGKILL))
        restart = (10.0, lambda: cluster.start("w2"))
        run_stream(env, events=EVENTS, rate=RATE, script=[kill, restart], label_delay=10)
        ends = end_offsets(settings.events_topic, PARTITIONS)

        def caught_up() -> bool:
            served = cluster.served()
            return all(
                served.get(p, ({}, None))[0].get("offset_applied") == end - 1 for p, end in ends.items()
            )

        wait_for("every partition to apply every event", caught_up, 120, cluster.logs)
        copies: dict[int, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for partition, records in read_topic(settings.predictions_topic, PARTITIONS).items():
            for record in records:
                copies[partition][orjson.loads(record.value)["offset"]].append(orjson.loads(record.value))
        yield Run(cluster, settings, copies)
    finally:
        cluster.stop_all()


def decision(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What every copy of a prediction record, and its replay, must repeat."""
    return doc["class"], doc["proba"], {k: doc["model"][k] for k in LOG_VERSION}


def test_sampled_past_decisions_of_a_run_with_a_sigkill_are_reproduced_and_explained(killed: Run) -> None:
    copies = killed.copies
    duplicated = {
        p: sorted(o for o, at in by_offset.items() if len(at) > 1) for p, by_offset in copies.items()
    }
    if getattr(killed.settings, "processing_guarantee", "at_least_once") == "at_least_once":
        assert any(duplicated.values()), "the SIGKILL made the next owner write some predictions again"
    for partition, by_offset in copies.items():
        for offset, written in by_offset.items():
            assert {orjson.dumps(decision(c)) for c in written} == {orjson.dumps(decision(written[0]))}, (
                f"partition {partition} offset {offset}: copies differ: {written}"
            )
            assert written[0]["replayed"] is False, "the first copy is the decision as first made"

    rng = random.Random(11)
    checked = twice = 0
    for partition in range(PARTITIONS):
        share = SAMPLED // PARTITIONS
        again = duplicated.get(partition, [])[: share // 2]  # half of them written twice, if any
        # The partition's last decision: after its newest kept snapshot, so one replay at least
        # starts from a snapshot (only the newest STREAMAPP_SNAPSHOTS_KEPT are kept).
        last = [max(set(copies[partition]) - set(again))]
        rest = sorted(set(copies[partition]) - set(again) - set(last))
        sampled = sorted(again + last + rng.sample(rest, share - len(again) - 1))
        status, reports = replay(killed.cluster.env, partition, sampled)
        assert status == 0, [r.get("differences") or r.get("error") for r in reports]
        assert [r["offset"] for r in reports] == sampled
        for report in reports:
            written = copies[partition][report["offset"]]
            assert report["equal"] and report["differences"] == []
            assert report["copies"] == len(written) and report["recorded"] == written[0]
            assert decision(report["replayed"]) == decision(written[0])  # class, probabilities, version
            explanation = report["explanation"]
            if report["replayed"]["model"]["learned"]:
                assert explanation["kind"] == "decision path" and explanation["text"], report
            else:  # before the partition's first label
                assert explanation == {
                    "kind": "none",
                    "why": "HoeffdingTreeClassifier has learned nothing yet",
                }
        assert any(r["rebuilt_from"].startswith("snapshot #") for r in reports)
        checked += len(reports)
        twice += len(again)
    assert checked == SAMPLED
    written_twice = sum(map(len, duplicated.values()))
    print(f"\n{SAMPLED} decisions reproduced, {twice} of them written twice ({written_twice} offsets were)")

    scored = set(copies[0])
    label = next(o for o in range(max(scored)) if o not in scored)  # a late label's offset
    status, reports = replay(killed.cluster.env, 0, [label])
    assert status == 1 and "is no scored event" in reports[0]["error"]


def test_the_explain_view_answers_as_streamapp_replay_from_any_worker(killed: Run) -> None:
    workers = list(killed.cluster.workers.values())
    assert all(w.alive() for w in workers)
    rng = random.Random(3)
    for partition in range(PARTITIONS):
        written = killed.copies[partition]
        offsets = sorted(rng.sample(sorted(written), 2))
        _, lines = replay(killed.cluster.env, partition, offsets)
        for offset, line in zip(offsets, lines, strict=True):
            for worker in workers:  # one of them owns the partition, the other forwards
                status, _, body = explain(worker, f"/models/{partition}/explain?offset={offset}")
                assert (status, body) == (200, line), (partition, offset, worker.datadir.name)

    w1 = killed.cluster.workers["w1"]
    label = next(o for o in range(max(killed.copies[1])) if o not in killed.copies[1])
    refused = [
        ("/models/1/explain?offset=x", TOKEN, 400, "offset must be an event's offset"),
        ("/models/1/explain", TOKEN, 400, "got 0 values"),
        ("/models/9/explain?offset=1", TOKEN, 404, "no partition '9'"),
        ("/models/1/explain?offset=99999999", TOKEN, 404, "not 99999999 yet"),
        (f"/models/1/explain?offset={label}", TOKEN, 422, "is no scored event"),
        ("/models/1/explain?offset=1", None, 401, "STREAMAPP_API_TOKEN"),
        ("/models/1/explain?offset=1", "x" * 32, 401, "STREAMAPP_API_TOKEN"),
    ]
    for path, token, status, why in refused:
        got, headers, body = explain(w1, path, token)
        assert got == status and why in body["error"], (path, got, body)
        assert headers["Content-Type"].startswith("application/json")
