"""Snapshots made in a forked child (streamapp/snapshot_writer.py) while the partition goes on
learning: each holds exactly the state at the offset it names, and one whose partition changed
hands before it was back is never written."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import pytest
from faust.types import TP

from streamapp import datasets, producer, snapshot, snapshot_writer
from streamapp.partition import PartitionState
from tests.processor_harness import TOPIC, Harness
from tests.unit.test_snapshot_child import gone

STREAM = [value for _, value in producer.messages(datasets.load("phishing", limit=400))]


PROBES = [orjson.loads(value)["x"] for value in STREAM[::7]]


def learned(state: PartitionState) -> tuple[object, ...]:
    """What a state has learned, as it shows: its counts, its metrics and its model's answers.
    (Not its pickle: River's Gaussian estimators hold unseeded generators they never use to
    learn or predict.)"""
    answers = [state.model.predict_proba_one(x) for x in PROBES]
    return state.offset, state.events_learned, state.labels_late, state.metrics.values(), answers


def state_after(offset: int) -> tuple[object, ...]:
    """What a partition that learned the stream up to `offset` on the loop has learned."""
    harness = Harness.build(snapshot_every_events="1000000")
    harness.feed(STREAM[: offset + 1])
    return learned(harness.state)


def test_each_snapshot_holds_the_state_at_its_offset_while_the_partition_learned_on() -> None:
    harness = Harness.build(snapshot_in="child", snapshot_every_events="20", snapshots_kept="50")
    batch_ends = set()
    for start in range(0, len(STREAM), 30):  # each batch: a child starts mid-batch, the rest is applied
        harness.feed(STREAM[start : start + 30])
        batch_ends.add(harness.state.offset)
    writer = harness.processor.writer
    assert writer.running is None
    headers = harness.processor.kept_headers(0)
    assert len(headers) >= 10 and harness.state.runtime.snapshot_errors == 0
    assert writer.forks == len(headers) == harness.state.runtime.snapshot_seq
    assert any(h.offset not in batch_ends for h in headers), "every child was forked at a batch end"
    for header, blob in harness.processor.kept_snapshots(0):
        _, restored = snapshot.decode(blob, harness.processor.signer, 0)
        assert restored.offset == header.offset
        assert learned(restored) == state_after(header.offset), f"snapshot #{header.seq}"
    latest = headers[0]
    assert harness.state.runtime.snapshot_offset == latest.offset
    learned_since = harness.state.offset - latest.offset
    assert harness.state.runtime.events_since_snapshot == learned_since, "events since the fork count"


async def handle_one_batch_then(harness: Harness, then: str) -> int:
    """One batch that starts a child; then the partition is revoked, rewound or the worker stops
    before the child is done. The child's pid."""
    processor = harness.processor
    await processor.handle_batch(TP(TOPIC, 0), harness.batch(0), lambda: True)
    assert processor.writer.running is not None
    task = processor.writer.running[1]
    pid = task.get_coro().cr_frame.f_locals["child"].pid  # type: ignore[union-attr]
    if then == "revoked":
        processor.keep_only(set())
    elif then == "replaced":
        processor.new_state(0)  # what a rewind or a recovery does: another live state
    else:
        await processor.close()
    await asyncio.gather(task, return_exceptions=True)
    return pid


@pytest.mark.parametrize("then", ["revoked", "replaced", "stopped"])
def test_a_snapshot_whose_partition_changed_hands_is_dropped_and_its_child_reaped(then: str) -> None:
    harness = Harness.build(snapshot_in="child", snapshot_every_events="10")
    harness.log.extend((value, ()) for value in STREAM[:200])
    pid = asyncio.run(handle_one_batch_then(harness, then))
    assert gone(pid)
    assert dict(harness.snapshots) == {}, "a snapshot of a state that is no longer live was written"
    assert harness.processor.writer.running is None


def test_a_snapshot_the_child_cannot_make_is_counted_logged_and_tried_again_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = Harness.build(
        snapshot_in="child",
        snapshot_every_events="50",
        max_snapshot_bytes="3000",  # a tree of a few hundred events pickles to more
        pending_labels_max_bytes="1000",
    )
    with caplog.at_level(logging.ERROR):
        for start in range(0, 300, 25):
            harness.feed(STREAM[start : start + 25])
    state = harness.state
    assert state.offset == 299, "the model learned on"
    assert dict(harness.snapshots) == {} and state.runtime.snapshot_seq == 0
    assert 2 <= state.runtime.snapshot_errors <= 300 // 37, "not retried at every event"
    reasons = [r.getMessage() for r in caplog.records if "SNAPSHOT NOT WRITTEN" in r.getMessage()]
    assert len(reasons) == state.runtime.snapshot_errors
    assert "STREAMAPP_MAX_SNAPSHOT_BYTES" in reasons[0] and "SnapshotError" in reasons[0]


def test_a_child_that_hangs_is_killed_and_its_snapshot_counted_as_not_written(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One child runs at a time: a hung one would hold back every large partition's snapshot."""

    def hang(*args: object) -> bytes:
        time.sleep(3600)
        return b""

    monkeypatch.setattr(snapshot_writer, "CHILD_TIMEOUT", 0.5)
    monkeypatch.setattr(snapshot, "encode", hang)  # the child's copy of it, after the fork
    harness = Harness.build(snapshot_in="child", snapshot_every_events="10")
    harness.log.extend((value, ()) for value in STREAM[:50])

    async def one_batch() -> int:
        writer = harness.processor.writer
        await harness.processor.handle_batch(TP(TOPIC, 0), harness.batch(0), lambda: True)
        assert writer.running is not None
        task = writer.running[1]
        pid: int = task.get_coro().cr_frame.f_locals["child"].pid  # type: ignore[union-attr]
        await task
        return pid

    with caplog.at_level(logging.ERROR):
        pid = asyncio.run(one_batch())
    assert gone(pid), "the child is killed and reaped"
    assert harness.processor.writer.running is None, "the next child may start"
    assert harness.state.runtime.snapshot_errors == 1 and dict(harness.snapshots) == {}
    (said,) = [r.getMessage() for r in caplog.records if "SNAPSHOT NOT WRITTEN" in r.getMessage()]
    assert "the child ran for more than 0.5 s and was killed" in said, said
