"""Forged snapshots written straight into the changelog topic: a real worker restoring from it
refuses them without running anything, serves the partition from an older snapshot, and its
model stays River's on the partition's log."""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
from pathlib import Path
from typing import Any

import orjson

from streamapp import signing, snapshot
from streamapp.settings import Secret, Settings
from streamapp.signing import Signer
from tests.integration.chaos import Cluster, assert_exact, run_stream
from tests.integration.cluster import read_topic, send_raw, unique_env, wait_for
from tests.unit.test_snapshot import header_fields

PARTITIONS = 2
WRONG_KEY = "not-the-workers-key-0123456789abcdefghijk"


class Touch:
    """Unpickled by plain pickle, it runs `touch path`: code execution on the restoring worker."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.path}",)


def forged_header(partition: int, offset: int, seq: int, payload: bytes, fmt: int) -> bytes:
    """A header a worker could have written, claiming a newer snapshot than any kept."""
    fields = header_fields(partition, offset, seq, format=fmt, payload_bytes=len(payload))
    if fmt == 1:
        fields["payload_sha256"] = hashlib.sha256(payload).hexdigest()  # correct: anyone can compute it
    return orjson.dumps(fields)


def old_format(partition: int, offset: int, seq: int, payload: bytes) -> bytes:
    """Format 1: a valid header and SHA-256 digest around the payload, as the codec once wrote."""
    head = forged_header(partition, offset, seq, payload, 1)
    return snapshot.UNSIGNED_MAGIC + len(head).to_bytes(4, "big") + head + payload


def wrong_key(partition: int, offset: int, seq: int, payload: bytes) -> bytes:
    """Format 2, signed like a worker signs but with a key the workers do not hold."""
    head = forged_header(partition, offset, seq, payload, snapshot.FORMAT)
    mac = Signer(Secret(WRONG_KEY)).sign(signing.SNAPSHOT, snapshot.MAGIC, head, payload)
    return snapshot.MAGIC + len(head).to_bytes(4, "big") + head + mac + payload


def test_forged_snapshots_in_the_changelog_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    env = unique_env(PARTITIONS, snapshot_every_events="100", snapshot_every_seconds="600")
    settings = Settings.from_env(env)
    signer = Signer.from_settings(settings)
    changelog = f"{settings.app_id}-snapshots-changelog"
    cluster = Cluster(env, tmp_path)
    marker = tmp_path / "pwned"
    try:
        worker = cluster.start("w1")
        run_stream(env, events=900, rate=0, script=[])
        assert_exact(cluster, settings)
        wait_for(
            "three snapshots of each partition",
            lambda: all(s["snapshot"]["seq"] >= 3 for s in worker.models().values()),
            60,
            worker.log_tail,
        )
        cluster.stop("w1", signal.SIGTERM)

        # The newest kept snapshot of each partition, its record key as Faust wrote it, and the
        # older one recovery should fall back to (the test may verify; the workers do too).
        newest: dict[int, tuple[bytes, snapshot.Header]] = {}
        slots: dict[int, dict[bytes, snapshot.Header]] = {}
        for partition, records in read_topic(changelog, PARTITIONS).items():
            for record in records:
                assert record.key is not None and record.value is not None
                slots.setdefault(partition, {})[record.key] = snapshot.verify(record.value, signer, partition)
            key, header = max(slots[partition].items(), key=lambda item: item[1].seq)
            newest[partition] = (key, header)
        assert {k.decode() for p in slots for k in slots[p]} >= {'"p0/1"', '"p1/1"'}  # JSON strings
        fallback = {p: sorted(h.seq for h in slots[p].values())[-2] for p in slots}

        # Two forged records under each newest slot; the last one written is what the table holds:
        # the old format for partition 0, the wrong key for partition 1.
        payload = pickle.dumps(Touch(marker), protocol=pickle.HIGHEST_PROTOCOL)
        forged = []
        for partition, (key, header) in newest.items():
            seq, offset = header.seq + 1, header.offset + 1
            kinds = [wrong_key, old_format] if partition == 0 else [old_format, wrong_key]
            forged += [(partition, key, forge(partition, offset, seq, payload)) for forge in kinds]
        send_raw(changelog, forged)

        cluster.wipe("w1")  # recovery reads the table back from the changelog
        worker = cluster.start("w1")
        wait_for(
            "both partitions recovered",
            lambda: set(worker.models()) == set(range(PARTITIONS)),
            120,
            worker.log_tail,
        )
        assert not marker.exists(), "a forged snapshot ran code on the worker"
        log = worker.log_path.read_text()
        assert "partition 0: SNAPSHOT REFUSED" in log and "unsigned format 1" in log
        assert "partition 1: SNAPSHOT REFUSED" in log and "does not verify" in log
        assert WRONG_KEY not in log and env["STREAMAPP_SIGNING_KEY"] not in log
        for partition, state in worker.models().items():
            assert state["recovery"]["from"] == "snapshot", state["recovery"]
            assert f"partition {partition}: restored snapshot #{fallback[partition]} " in log
            listed = worker.get(f"/models/{partition}/snapshots")["snapshots"]
            assert newest[partition][1].seq + 1 not in [s["seq"] for s in listed]  # never offered

        refused = {
            s.labels["partition"]: s.value
            for s in worker.metrics()["streamapp_snapshots_refused"].samples
            if s.name.endswith("_total")
        }
        assert refused == {"0": 1.0, "1": 1.0}, refused

        # More events: every partition's model equals River's on its whole log.
        run_stream(env, events=300, rate=0, script=[])
        assert_exact(cluster, settings)
        assert not marker.exists()
    finally:
        cluster.stop_all()
