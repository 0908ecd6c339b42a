"""Upgrades that keep the models (docs/runbooks/upgrade.md), on a real broker and real workers:
`streamapp snapshots check` says what a new version would do with each partition's snapshots,
and a blue/green upgrade moves the outputs to a new deployment that learned from the retained
log, with every event answered exactly once, by models equal to River's, across the switch."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from streamapp.producer import produce
from streamapp.settings import Settings
from streamapp.switch import COPIED_FROM
from streamapp.topics import create_topics
from tests.integration.chaos import Cluster, assert_exact
from tests.integration.cluster import (
    ROOT,
    committed_offsets,
    delete_records_before,
    end_offsets,
    read_topic,
    running,
    send_raw,
    unique_env,
    wait_for,
)

PARTITIONS = 2
OTHER_KEY = "another-signing-key-0123456789abcdefghij"
#: a worker of a River release other than this one (the upgrade's real case): the version the
#: snapshot header is compared with, and nothing else, is changed in that process
OTHER_RIVER = (
    "import sys, river; river.__version__ = '0.99.0'; from streamapp.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


def streamapp(env: dict[str, str], *argv: str, python: list[str] | None = None) -> tuple[int, str]:
    command = python or [sys.executable, "-m", "streamapp"]
    done = subprocess.run(
        [*command, *argv], env={**os.environ, **env}, cwd=ROOT, capture_output=True, timeout=180
    )
    assert done.returncode in (0, 1, 2), done.stderr.decode()[-3000:]
    return done.returncode, done.stdout.decode()


def check(env: dict[str, str], python: list[str] | None = None) -> tuple[int, dict[int, dict[str, Any]]]:
    status, out = streamapp(env, "snapshots", "check", "--json", python=python)
    verdicts = [orjson.loads(line) for line in out.splitlines()]
    return status, {v["partition"]: v for v in verdicts}


def test_snapshots_check_says_what_a_new_version_would_restore_and_replay(tmp_path: Path) -> None:
    env = unique_env(PARTITIONS, snapshot_every_events="100", snapshots_kept="3")
    settings = Settings.from_env(env)
    asyncio.run(produce(settings, "card", limit=700, progress=False))
    with running(env, tmp_path / "w1") as worker:
        served = worker.wait_caught_up(settings.events_topic, PARTITIONS)
    ends = end_offsets(settings.events_topic, PARTITIONS)

    # The same version: every partition restores its newest snapshot and replays only the tail.
    status, verdicts = check(env)
    assert status == 0, verdicts
    for partition, verdict in verdicts.items():
        snapshot = served[partition]["snapshot"]
        newest = max(verdict["kept"], key=lambda kept: kept["seq"])
        assert verdict["status"] == "keeps" and verdict["restores"] == newest["seq"] == snapshot["seq"]
        assert verdict["replay_from"] == snapshot["offset"] + 1 > 100
        assert verdict["events_to_replay"] == ends[partition] - verdict["replay_from"]
        assert len(verdict["kept"]) == 3 and all(k["refused"] is None for k in verdict["kept"])

    # Another River release refuses every pickle: each partition would start a new model and
    # replay its whole log, which retention still holds (exact, but slow).
    status, verdicts = check(env, python=[sys.executable, "-c", OTHER_RIVER])
    assert status == 1, verdicts
    for partition, verdict in verdicts.items():
        assert (verdict["status"], verdict["restores"], verdict["replay_from"]) == ("replays", None, 0)
        assert verdict["events_to_replay"] == ends[partition]
        assert all("runs 0.99.0: pickles do not carry" in k["refused"] for k in verdict["kept"]), verdict[
            "kept"
        ]

    # Retention deleted partition 0's first 50 events: a new model there would miss them.
    delete_records_before(settings.events_topic, 0, 50)
    status, verdicts = check(env, python=[sys.executable, "-c", OTHER_RIVER])
    assert status == 2 and verdicts[0]["status"] == "loses" and verdicts[1]["status"] == "replays"
    assert verdicts[0]["log_start"] == 50
    # ...while this version still restores from a snapshot past them.
    assert check(env)[0] == 0

    # Snapshots signed with another key than the new deployment's are refused, with the reason.
    status, verdicts = check({**env, "STREAMAPP_SIGNING_KEY": OTHER_KEY})
    assert status == 2
    assert all("signature" in k["refused"] for v in verdicts.values() for k in v["kept"])
    text_status, text = streamapp(env, "snapshots", "check")
    assert text_status == 0 and "a rolling update keeps every model" in text
    assert f"partition 0: restores #{verdicts[0]['kept'][0]['seq']}" in text


def bad(topic: str, partition: int, count: int) -> None:
    """Records every version refuses: dead letters, which must switch too."""
    send_raw(topic, [(partition, b"bad", b"not json %d" % i) for i in range(count)])


def decode(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def test_a_blue_green_upgrade_answers_every_event_once_across_the_switch(tmp_path: Path) -> None:
    blue_env = unique_env(PARTITIONS, snapshot_every_events="150")
    blue = Settings.from_env(blue_env)
    uid = blue.app_id.removeprefix("it-")
    green_topics = {
        "STREAMAPP_APP_ID": f"{blue.app_id}-green",
        "STREAMAPP_PREDICTIONS_TOPIC": f"predictions-{uid}-green",
        "STREAMAPP_DEADLETTER_TOPIC": f"deadletter-{uid}-green",
    }
    green_env = {**blue_env, **green_topics}
    asyncio.run(create_topics(Settings.from_env(green_env)))
    switch_argv = [
        "switch",
        f"--green-app-id={green_topics['STREAMAPP_APP_ID']}",
        f"--green-predictions={green_topics['STREAMAPP_PREDICTIONS_TOPIC']}",
        f"--green-deadletters={green_topics['STREAMAPP_DEADLETTER_TOPIC']}",
    ]
    blues, greens = Cluster(blue_env, tmp_path / "blue"), Cluster(green_env, tmp_path / "green")
    clusters = [blues, greens]
    try:
        # Blue serves a while; then green starts as its own group and learns the retained log.
        blues.start("b1")
        asyncio.run(produce(blue, "card", limit=400, seed=1, progress=False))
        bad(blue.events_topic, 0, 2)
        blues.workers["b1"].wait_caught_up(blue.events_topic, PARTITIONS)
        green_worker = greens.start("g1")
        green_worker.wait_caught_up(blue.events_topic, PARTITIONS)
        # What the dashboard compares: the same log, the same metrics (this version is exact).
        for partition, state in blues.workers["b1"].models().items():
            assert green_worker.models()[partition]["metrics"] == state["metrics"]

        # Not before green has applied every event: a group that never ran has not.
        never_ran = [switch_argv[0], f"--green-app-id={blue.app_id}-none", *switch_argv[2:]]
        status, out = streamapp(blue_env, *never_ran)
        assert status == 1 and "events left to apply" in out, out
        # Nor while green runs, even with every event applied and committed.
        ends = end_offsets(blue.events_topic, PARTITIONS)
        green_id = green_topics["STREAMAPP_APP_ID"]
        wait_for("green to commit", lambda: committed_offsets(green_id, blue.events_topic) == ends, 30)
        status, out = streamapp(blue_env, *switch_argv)
        assert status == 1 and "still runs" in out, out

        # The switch: blue stops; the stream goes on; green applies every event and stops.
        blues.stop("b1")
        answered_by_blue = end_offsets(blue.events_topic, PARTITIONS)
        asyncio.run(produce(blue, "card", limit=300, seed=2, progress=False))
        bad(blue.events_topic, 1, 1)
        green_worker.wait_caught_up(blue.events_topic, PARTITIONS)
        greens.stop("g1")
        # Records anyone with write access to green's topics could add: none is copied.
        forged = [b'{"offset": 1000000000000, "partition": 0}', b'{"offset": true}', b"\x00junk", b"[]"]
        send_raw(green_topics["STREAMAPP_PREDICTIONS_TOPIC"], [(0, b"k", value) for value in forged])
        status, out = streamapp(blue_env, *switch_argv)
        assert status == 0, out
        after_blue = end_offsets(blue.events_topic, PARTITIONS)
        for partition in range(PARTITIONS):
            copied = after_blue[partition] - answered_by_blue[partition]
            assert f"partition {partition}: {copied} outputs copied" in out, out
        status, out = streamapp(blue_env, *switch_argv)
        assert status == 0 and out.count(": 0 outputs copied") == PARTITIONS, f"again, nothing: {out}"

        # Green restarts on blue's topics (its group resumes where it stopped) and serves on.
        outputs = ("STREAMAPP_PREDICTIONS_TOPIC", "STREAMAPP_DEADLETTER_TOPIC")
        moved = Cluster({**green_env, **{k: blue_env[k] for k in outputs}}, tmp_path / "green")
        clusters.append(moved)
        moved.start("g1")
        asyncio.run(produce(blue, "card", limit=200, seed=3, progress=False))
        bad(blue.events_topic, 0, 1)
        settings = Settings.from_env(moved.env)
        assert_exact(moved, settings, decode=decode)  # every event answered, as River would
        # Each event once, as first decided; what green's restart scored again (from its last
        # snapshot, as any restart at least once does) is marked replayed.
        written = [r for recs in read_topic(blue.predictions_topic, PARTITIONS).values() for r in recs]
        first = Counter(
            (r.partition, orjson.loads(r.value)["offset"])
            for r in written
            if not orjson.loads(r.value)["replayed"]
        )
        assert len(first) == sum(after_blue.values()) + 200 - 3 and set(first.values()) == {1}
        green_predictions = green_topics["STREAMAPP_PREDICTIONS_TOPIC"].encode()
        copied = [r for r in written if (COPIED_FROM, green_predictions) in (r.headers or ())]
        assert len(copied) == sum(after_blue.values()) - sum(answered_by_blue.values()) - 1
        letters = {
            p: [int(dict(r.headers)["streamapp.source.offset"]) for r in recs]
            for p, recs in read_topic(blue.deadletter_topic, PARTITIONS).items()
        }
        logs = read_topic(blue.events_topic, PARTITIONS)
        refused = {p: [r.offset for r in recs if decode(r) is None] for p, recs in logs.items()}
        # Every refused event dead-lettered (again after green's restart, as at least once does).
        assert {p: sorted(set(o)) for p, o in letters.items()} == refused, (letters, refused)
        assert sum(map(len, refused.values())) == 4
    finally:
        for cluster in clusters:
            cluster.stop_all()
